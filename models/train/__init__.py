"""Train and evaluate the reference models: `python -m models.train MODEL --data synthetic ...`.

    python -m models.train mol --data synthetic --protocol split --epochs 3
    python -m models.train mol --data /path/CASME2 --protocol loso --epochs 40
    python -m models.train mtstwn --data synthetic --frames 8 --size 64 --embed-dim 24 --depths 1,1,1
    python -m models.train stt --data /path/DFEW --fold 1           (DFEW's set_1_{train,test}.txt lists)
    torchrun --nproc_per_node 2 -m models.train mol --data synthetic ...     (DistributedDataParallel)

Models: mol (docs/models/mol.md), mtstwn (docs/models/mtstwn.md); each is one task definition
(models/train/task.py) plugged into one loop. Protocols: "loso" (leave one subject out: one fold per subject,
metrics over the concatenated predictions of all folds, as MER papers report) or "split" (one stratified
train/test split). Every epoch writes a checkpoint (`<out>/checkpoint.pt`: model, optimiser, fold, epoch, RNG
state and the finished folds' predictions), a row of `<out>/metrics.csv` and, per fold, `<out>/curves.png`;
`--resume` continues from the checkpoint, and a run never replaces one without `--overwrite`. Under torchrun
each process trains on its shard of every batch (gloo on CPU, nccl on GPU); rank 0 prints and writes the files.
"""

from ..mol import MOL
from .cli import build_parser, count, parse_args, positive_int
from .inputs import model_input
from .loop import (
    CHECKPOINT_KEYS,
    backend_ctx,
    build_dataset,
    compare_backends,
    describe_backend,
    load_checkpoint,
    main,
    make_folds,
    new_model,
    predict,
    train_step,
)
from .task import Task
from .tasks import TASKS

__all__ = ["main", "parse_args", "build_parser", "build_dataset", "make_folds", "describe_backend",
           "model_input", "load_checkpoint", "CHECKPOINT_KEYS", "TASKS", "Task", "MOL", "positive_int",
           "count", "backend_ctx", "compare_backends", "new_model", "predict", "train_step"]  # fmt: skip
