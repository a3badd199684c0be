"""Operations over many sessions and the disk: dumps, restore, cleanup, rotation, repair, backups.

Each Redis-touching one is a sans-IO generator like the core's, so both managers run it.
"""
