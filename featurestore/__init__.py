"""The feature store: Feast behind skewguard's own small types, for training, serving and monitoring.

``connection`` opens a cascade's Feast project and translates what Feast raises;
``repository`` loads a user's Feast repository, applies it, materializes it and joins
point in time (training); ``online`` reads the latest values by entity key (serving).
Feast's types stay inside this package.
"""
