"""Coarse-anchored refiners in pixel space: the model family that trains on a CPU.

The latent IDGBR family (`idgbr.diffusion`, presets `sd15`/`compact`) generates the label map
from noise through a VAE and needs a GPU to learn. This family starts from the coarse map
instead and spends its compute on the boundaries:

- `net.AnchoredRefinerNet`: a condition encoder (image, coarse one-hot, distance to the coarse
  boundary, image gradient) run once per tile, and a light decoder run once per sampling step
  with the current label state. Its output is the coarse map's logits plus a zero-initialised
  correction confined to a band around the coarse boundaries: at initialisation it reproduces
  the coarse map exactly, and pixels outside the band are copied.
- `process`: the two ways of using the network. `diffusion` is a residual-shifting Gaussian
  diffusion of the one-hot label map whose x_T is the noised coarse map (few steps, x0
  prediction, several samples give the uncertainty); `discriminative` is the same network run
  once from the coarse map (the control the issue asks for).
- `data`: boundary-centred training crops with coarse maps from the recipes of
  `idgbr.coarsen`; `train`: the training loop (checkpoints, exact resume, validation, model
  folder export).

`idgbr.models.anchored` puts a trained folder behind the refiner protocol.
"""
