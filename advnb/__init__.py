"""Literate, notebook-first reproduction of five papers on the local and frequency structure of adversarial examples

Modules:

- `advnb.attacks`: The attack suite the five papers evaluate with: gradient attacks (FGSM, PGD in L∞ and L2 with cross-entropy, TRADES-KL and CW-margin losses, Carlini–Wagner L2, DeepFool), a deformation attack (ADef), two query-only attacks (Salt & Pepper, NAttack), the minimal-perturbation bookkeeping of paper C, and one `robust_accuracy` loop. Every attack is batched, takes and returns images in [0, 1], runs on the inputs' device, is seeded, and leaves the model's mode and parameter gradients exactly as it found them.
- `advnb.train`: A single training loop for every model in the five papers. What changes between papers is the *objective* (standard cross-entropy, PGD adversarial training, TRADES, RLFAT, smooth-kernel regularisers, …) and the optimiser/schedule, all named in a `TrainSpec`. Every epoch writes a checkpoint (safetensors + JSON, atomically) and training resumes bit-exactly after an interruption."""

__version__ = "0.1.0"
