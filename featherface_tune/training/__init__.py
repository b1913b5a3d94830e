"""RetinaFace-style training: augmentation, prior matching, MultiBox loss, the loop, and the proxy
objective the search calls."""
