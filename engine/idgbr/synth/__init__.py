"""Synthetic training pairs: SatSynth (Toker et al., CVPR 2024), a diffusion model of the joint
distribution p(image, label) that generates orthophoto tiles together with their class maps,
and the code that mixes such pairs into real training sets and describes them.

    idgbr synth train --config resources/configs/synth-landcover.yaml
    idgbr synth sample --model runs/synth-landcover --n 64 --out synth/landcover

Modules: `bits` (class maps ↔ ±1 bit planes), `config`, `model` (base + super-resolution UNets
and their folder), `train`, `sample`, `cli`, `mix` (synthetic pairs joined to real tiles) and
`stats`. Nothing is imported here, so the command line starts without torch.
"""
