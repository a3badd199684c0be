"""The session operations, written once as sans-IO generators (see core/base.py)."""
