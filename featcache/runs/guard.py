"""A run directory never lies inside a feature store: checkpoints written into a
content-addressed entry would be deleted by a later `featcache rm` of it. Neither it nor any
other output folder is, or lies under, a regular file."""

from __future__ import annotations

from pathlib import Path

from featcache.errors import ConfigError


def check_run_dir(run_dir: str | Path, store: str | None) -> None:
    """Refuse a run_dir that is a filesystem root, is or lies inside a feature store (the
    manifest's `store`, or any folder with a zarr.json at its top: a store root holds its entries
    there). A store in a subfolder of run_dir (run_dir ".", store "./featcache-store") is the usual
    layout and allowed: a run never writes into it."""
    from featcache.store.backends import is_local  # zarr loads only when a run starts

    check_folder(run_dir, "run_dir")
    path = Path(run_dir).expanduser().resolve()
    if path == Path(path.anchor):
        raise ConfigError(f"run_dir {run_dir} is a filesystem root; set run_dir to a folder of its own, "
                          "e.g. runs/NAME", fields=("run_dir",))
    stores = [Path(store.removeprefix("file://")).expanduser().resolve()] if store and is_local(store) else []
    for folder in (path, *path.parents):
        if folder in stores or (folder / "zarr.json").is_file():
            where = "is" if folder == path else f"lies inside {folder}, which is"
            raise ConfigError(f"run_dir {run_dir} {where} a feature store (or one of its entries); set "
                              "run_dir to a folder outside the store, e.g. runs/NAME", fields=("run_dir",))


def check_folder(folder: str | Path, name: str) -> None:
    """One line, not a FileExistsError or NotADirectoryError later, when the folder an output is
    written to is a regular file or lies under one. `name` is the setting that gave it."""
    path = Path(folder).expanduser().absolute()
    for above in (path, *path.parents):
        if above.exists() and not above.is_dir():
            where = "is a file" if above == path else f"lies under {above}, which is a file"
            raise ConfigError(f"{name} {folder} {where}, not a folder; set {name} to a folder (it is "
                              "created if missing)", fields=(name,))
        if above.exists():
            return
