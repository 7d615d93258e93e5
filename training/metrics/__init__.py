"""Video generation metrics: FVD (``fvd``: the Fréchet distance on I3D features, ``i3d``) and CLIPSIM (``clipsim``)."""
