"""The Redis layer: key names, commands, Lua scripts, store operations, drivers, clients.

The only package that speaks Redis commands (the worker's lock and the server launcher
aside). It knows nothing of the models: it moves bytes and strings, and redsession.core
turns them into models.
"""
