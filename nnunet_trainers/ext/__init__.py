"""The folder named by ``nnUNet_extTrainer`` (``unifocal nnunet-path`` prints it).

nnU-Net imports each module here as a top-level module while it looks for a trainer class; the modules
only re-export the classes of :mod:`nnunet_trainers.trainers`, so the classes exist once.
"""
