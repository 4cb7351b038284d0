"""Running nnU-Net experiments for ``unifocal demo`` and ``unifocal sweep``, one job per module:

- :mod:`.process`: a child process with a complete log, progress lines, clean termination;
- :mod:`.nnunet_log`: nnU-Net's training output read as one line per epoch;
- :mod:`.workspace`: nnU-Net's folders, environment and three steps (plan, train, predict);
- :mod:`.output`: what a run may write and remove in its output folder;
- :mod:`.loss_check`: the loss settings checked with the trainer's own checks before any step;
- :mod:`.launch`: a sweep's runs as jobs (this process, submitit's local or SLURM executor) and their record;
- :mod:`.sweep_report`: a sweep's completed runs evaluated and summarised over folds.
"""
