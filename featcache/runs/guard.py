"""A run directory never lies inside a feature store: checkpoints written into a
content-addressed entry would be deleted by a later `featcache rm` of it."""

from __future__ import annotations

from pathlib import Path

from featcache.errors import ConfigError


def check_run_dir(run_dir: str | Path, store: str | None) -> None:
    """Refuse a run_dir that is a filesystem root, is or lies inside a feature store (the
    manifest's `store`, or any folder with a zarr.json at its top: a store root holds its entries
    there). A store in a subfolder of run_dir (run_dir ".", store "./featcache-store") is the usual
    layout and allowed: a run never writes into it."""
    from featcache.store.backends import is_local  # zarr loads only when a run starts

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
