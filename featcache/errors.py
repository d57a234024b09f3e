"""One exception hierarchy. Every error a user can cause is a FeatcacheError: the CLI prints its
message as one red line and exits 1 (no traceback unless --debug)."""


class FeatcacheError(Exception):
    """A user-facing error: the message says what is wrong and what to do.

    The message names settings as the library calls them (`threshold`, `image_size`); `fields`
    lists the ones it names, so that the CLI can print them as the flags they were given as
    (`--threshold`, `--image-size`).
    """

    def __init__(self, *args: object, fields: tuple[str, ...] = ()) -> None:
        super().__init__(*args)
        self.fields = tuple(fields)  # an attribute, so it survives pickling (DataLoader, Dask workers)


class ConfigError(FeatcacheError):
    """A manifest, option or setting is wrong."""


class DatasetError(FeatcacheError):
    """A dataset root, file, mask or split is wrong."""


class TeacherError(FeatcacheError):
    """A teacher name, architecture, checkpoint or level is wrong."""


class StoreError(FeatcacheError):
    """The feature store cannot be opened, read or written."""


class IncompleteEntryError(StoreError):
    """A store entry is not fully committed."""


class CorruptEntryError(StoreError):
    """A store entry failed a checksum, shape or id check."""


class ReadOnlyStoreError(StoreError):
    """A write was attempted on a read-only store."""


class CheckpointError(FeatcacheError):
    """A training checkpoint is missing or does not match."""


class FeatcacheWarning(UserWarning):
    """Something the user should know that does not stop the command (the CLI prints it as one
    yellow line): a setting that works, but not as its value suggests."""
