"""The domain: the models, the checks on input, the stored forms, merges and encryption.

Pure code: nothing here speaks to Redis or touches the disk, and nothing imports
redsession.storage (the two meet in redsession.core).
"""
