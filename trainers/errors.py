"""The one base class of every error a user's input can cause (a config, a dataset on disk, a
checkpoint, a registry name, a command-line argument). The entry points turn it into one line on
stderr and exit code 2, also when it was raised inside a Ray worker or actor; anything else is a
bug and keeps its traceback."""
from __future__ import annotations


class UserError(ValueError):
    """Bad input; `str(err)` is one line that names the field or file and what was expected."""
