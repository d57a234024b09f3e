"""featcache.extract"""
