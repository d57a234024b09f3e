"""Teachers: frozen foundation models with preprocessing, named levels and fingerprints."""
