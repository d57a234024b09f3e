"""featcache.distill"""
