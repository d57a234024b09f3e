"""The built-in dataset loaders, one module each: a dataset class, its build function and a one-line
SUMMARY. featcache/data/registry.py names them."""
