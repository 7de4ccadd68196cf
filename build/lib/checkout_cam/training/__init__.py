"""Fine-tuning on a store's own product photos, and measuring the result.

data.py (labelled photo sets: folders or list files, checks, fingerprints,
decoding), augment.py (batched tensor augmentation), finetune.py (the training
loop, checkpoints, export), metrics.py (accuracy and review-flag figures),
report.py (text, confusion-matrix PNG, CSV/JSON files).
"""
