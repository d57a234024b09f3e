"""featcache.evaluate"""
