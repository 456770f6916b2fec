"""Train and test RecBole 1.2.1's SASRec on an atomic file; run inside the RecBole venv.

bench/recbole_compare.py writes the atomic file and starts this script with the
RecBole virtual environment's Python, because RecBole 1.2.1 and this project need
different packages. The results go to the JSON file named by --output, not to the
terminal. They are per-epoch timings and validation NDCG@10, RecBole's own test
metrics, each user's test rank, and the validation and test item of each user.

Three things RecBole 1.2.1 needs on current packages, each handled here:
- NumPy 2 removed ``np.float_``, ``np.complex_`` and ``np.unicode_``, which RecBole's
  Config reads to restore even older aliases; the shim below puts them back.
- ``recbole.quick_start`` imports ``ray``; the venv installs RecBole without ray and
  this script never imports quick_start.
- torch 2.13's ``torch.load`` reads weights only, and RecBole's checkpoint contains
  its Config object, so the best checkpoint is reloaded here with ``weights_only=False``.
  That file is RecBole's own, written by this run.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

# Restore the NumPy names RecBole reads. This must run before any recbole import.
for _old, _new in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
    if not hasattr(np, _old):
        setattr(np, _old, _new)

import torch  # noqa: E402
from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.model.sequential_recommender import SASRec  # noqa: E402  (switches anomaly detection on)
from recbole.trainer import Trainer  # noqa: E402
from recbole.utils import init_logger, init_seed  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-path", required=True, help="folder holding <dataset>/<dataset>.inter")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--output", required=True, help="JSON file for the results")
    parser.add_argument("--checkpoint-dir", required=True)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--inner-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--anomaly", choices=("shipped", "off"), default="off",
                        help="shipped: leave the anomaly detection RecBole's import switched on; off: switch it off")
    return parser.parse_args()


def pessimistic_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Return 1 + the number of other items that score at least as high as the target."""
    target_scores = scores.gather(1, targets.unsqueeze(1))
    return (scores >= target_scores).sum(dim=1)


def held_out(loader, dataset, model=None) -> dict[str, dict]:
    """Map each user (raw id) to its held-out item and, given a model, that item's rank."""
    rows: dict[str, dict] = {}
    for interaction, _history, _positive_u, positive_i in loader:
        users = dataset.id2token(dataset.uid_field, interaction[dataset.uid_field].numpy())
        items = dataset.id2token(dataset.iid_field, positive_i.numpy())
        ranks = None
        if model is not None:
            scores = model.full_sort_predict(interaction).float()
            scores[:, 0] = -torch.inf  # RecBole's padding item
            ranks = pessimistic_ranks(scores, positive_i).tolist()
        for row, (user, item) in enumerate(zip(users, items)):
            rows[str(user)] = {"item": str(item)}
            if ranks is not None:
                rows[str(user)]["rank"] = int(ranks[row])
    return rows


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    if args.anomaly == "off":
        torch.autograd.set_detect_anomaly(False)
    config = Config(
        model="SASRec",
        dataset=args.dataset,
        config_dict={
            "data_path": args.data_path,
            "checkpoint_dir": args.checkpoint_dir,
            "USER_ID_FIELD": "user_id",
            "ITEM_ID_FIELD": "item_id",
            "TIME_FIELD": "timestamp",
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "MAX_ITEM_LIST_LENGTH": args.max_len,
            "hidden_size": args.hidden_size,
            "inner_size": args.inner_size,
            "n_layers": args.layers,
            "n_heads": args.heads,
            "hidden_dropout_prob": args.dropout,
            "attn_dropout_prob": args.dropout,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-8,
            "loss_type": "CE",
            "train_neg_sample_args": None,
            "epochs": args.epochs,
            "stopping_step": args.patience,
            "eval_step": 1,
            "train_batch_size": args.batch_size,
            "eval_batch_size": 512,
            "learner": "adam",
            "learning_rate": args.lr,
            "weight_decay": 0.0,
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
            "metrics": ["Recall", "NDCG", "MRR"],
            "topk": [10],
            "valid_metric": "NDCG@10",
            "seed": args.seed,
            "reproducibility": True,
            "use_gpu": False,
            "device": "cpu",
            "show_progress": False,
            "save_dataset": False,
            "save_dataloaders": False,
            "log_wandb": False,
        },
    )
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = SASRec(config, train_data.dataset).to(config["device"])
    trainer = Trainer(config, model)
    anomaly_during_training = torch.is_anomaly_enabled()

    # Time each epoch's training and validation passes by wrapping RecBole's own methods.
    epochs: list[dict] = []
    fit_started = time.perf_counter()
    train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch

    def timed_train(*a, **kw):
        t0 = time.perf_counter()
        loss = train_epoch(*a, **kw)
        epochs.append({"epoch": len(epochs) + 1, "train_seconds": time.perf_counter() - t0,
                       "loss": float(loss if not isinstance(loss, tuple) else sum(loss))})
        return loss

    def timed_valid(*a, **kw):
        t0 = time.perf_counter()
        score, result = valid_epoch(*a, **kw)
        epochs[-1]["valid_seconds"] = time.perf_counter() - t0
        epochs[-1]["valid_ndcg@10"] = float(score)
        epochs[-1]["elapsed_seconds"] = time.perf_counter() - fit_started
        return score, result

    trainer._train_epoch, trainer._valid_epoch = timed_train, timed_valid
    best_valid, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    fit_seconds = time.perf_counter() - fit_started

    # RecBole's own reload fails on torch 2.13 because of weights_only, so load RecBole's file here.
    checkpoint = torch.load(trainer.saved_model_file, map_location="cpu", weights_only=False)
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    model.eval()
    test_result = trainer.evaluate(test_data, load_best_model=False)
    with torch.no_grad():
        test_rows = held_out(test_data, dataset, model)
        valid_rows = held_out(valid_data, dataset)

    best_epoch = max(epochs, key=lambda row: (row.get("valid_ndcg@10", -1.0), -row["epoch"]))["epoch"]
    result = {
        "side": "recbole",
        "anomaly": args.anomaly,
        "anomaly_enabled_during_training": anomaly_during_training,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "threads": torch.get_num_threads(),
        "epochs": epochs,
        "best_epoch": best_epoch,
        "best_valid_ndcg@10": float(best_valid),
        "fit_seconds": fit_seconds,
        "wall_seconds": time.perf_counter() - started,
        "recbole_test": {key: float(value) for key, value in test_result.items()},
        "test": test_rows,
        "valid": valid_rows,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    with open(args.output, "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
