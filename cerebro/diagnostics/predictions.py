"""``predictions``: how good the predictions are, next to naive baselines."""

from __future__ import annotations

import numpy as np

from cerebro.diagnostics.base import Diagnostic
from cerebro.engine.context import AutopsyContext
from cerebro.registry import register_diagnostic
from cerebro.report.evidence import baseline_flag
from cerebro.report.figures import heatmap, new_figure
from cerebro.report.writer import DiagnosticOutput

__all__ = ["Predictions", "regression_metrics"]


def regression_metrics(pred: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    """RMSE, normalized RMSE (RMSE / std(y), the EEG Foundation Challenge metric), MAE, R^2 and Pearson r."""
    err = pred - y
    rmse = float(np.sqrt(np.mean(err**2)))
    std = float(np.std(y))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    pearson = float(np.corrcoef(pred, y)[0, 1]) if np.std(pred) > 0 and std > 0 else None
    return {
        "rmse": rmse,
        "nrmse": rmse / std if std > 0 else None,
        "mae": float(np.mean(np.abs(err))),
        "r2": 1.0 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 else None,
        "pearson_r": pearson,
    }


@register_diagnostic("predictions")
class Predictions(Diagnostic):
    """Regression: RMSE, nRMSE, MAE, R^2, Pearson r for the model and for mean/median predictors.
    Classification: accuracy, per-class accuracy and the confusion matrix, against the majority-class baseline
    (one flag at or below it, constant classifier or not)."""

    def run(self, ctx: AutopsyContext, out: DiagnosticOutput) -> None:
        pred = ctx.predictions().numpy()
        out.array("predictions", pred)
        out.array("indices", ctx.samples.indices)
        out.metric("n", int(pred.shape[0]))
        if not ctx.target.supervised:  # similarity, norm, a callable: the explained scalar itself
            out.metric("score_mean", float(np.mean(pred)))
            out.metric("score_std", float(np.std(pred)))
            out.metric("score_min", float(np.min(pred)))
            out.metric("score_max", float(np.max(pred)))
            fig, ax = new_figure()
            ax.hist(pred, bins=30)
            ax.set_xlabel(f"{ctx.target.kind} score")
            ax.set_ylabel("samples")
            ax.set_title(f"distribution of the explained {ctx.target.kind} score")
            out.figure(fig, "scores")
            return
        if not ctx.has_labels:
            out.flag("no labels in the batches: prediction quality not measured")
            out.metric("prediction_mean", float(np.mean(pred)))
            out.metric("prediction_std", float(np.std(pred)))
            return
        y = ctx.labels().numpy()
        out.array("targets", y)
        if ctx.target.kind == "classification":
            self._classification(ctx, pred, y, out)
        else:
            self._regression(pred.astype(np.float64), y.astype(np.float64), out)

    def _regression(self, pred: np.ndarray, y: np.ndarray, out: DiagnosticOutput) -> None:
        finite = np.isfinite(pred) & np.isfinite(y)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            out.flag(f"non-finite predictions or labels: {bad.size} of {pred.size} samples (positions "
                     f"{bad[:10].tolist()}); metrics use the {int(finite.sum())} finite ones")
            pred, y = pred[finite], y[finite]
            if pred.size == 0:
                return
        for key, value in regression_metrics(pred, y).items():
            out.metric(key, value)
        for name, const in (("mean", y.mean()), ("median", np.median(y))):
            base = regression_metrics(np.full_like(y, const), y)
            for key in ("rmse", "nrmse", "mae", "r2"):
                out.metric(f"{name}_predictor_{key}", base[key])
        out.metric("prediction_std", float(np.std(pred)))
        constant = pred.size >= 2 and np.std(pred) < 1e-8 * max(1.0, float(np.std(y)))
        out.metric("constant_predictions", bool(constant))
        # a constant regressor is never better than the mean (the best constant), so its flag stands for both; the
        # findings' model_quality states both facts (cerebro.report.findings.quality)
        if constant:
            out.flag("constant predictions: the model outputs the same value for every sample")
        elif out.metrics["rmse"] is not None and out.metrics["rmse"] >= out.metrics["mean_predictor_rmse"]:
            out.flag("no better than predicting the mean: rmse >= mean-predictor rmse")
        fig, ax = new_figure(5, 5)
        ax.scatter(y, pred, s=8, alpha=0.6)
        lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="ideal")
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
        ax.set_title(f"predicted vs true (nRMSE {out.metrics['nrmse'] or float('nan'):.3f})")
        ax.legend()
        out.figure(fig, "scatter")
        fig, ax = new_figure()
        ax.hist(pred - y, bins=30)
        ax.axvline(0, color="k", lw=1)
        ax.set_xlabel("residual (predicted - true)")
        ax.set_ylabel("samples")
        ax.set_title("residuals")
        out.figure(fig, "residuals")

    def _classification(self, ctx: AutopsyContext, pred: np.ndarray, y: np.ndarray, out: DiagnosticOutput) -> None:
        k = int(ctx.outputs.shape[1])
        cm = np.zeros((k, k), dtype=np.int64)
        np.add.at(cm, (y, pred), 1)
        out.array("confusion_matrix", cm)
        accuracy = float(np.mean(pred == y))
        out.metric("accuracy", accuracy)
        counts = np.bincount(y, minlength=k)
        majority = int(np.argmax(counts))
        majority_accuracy = float(counts[majority] / len(y))
        out.metric("majority_class", majority)
        out.metric("majority_class_accuracy", majority_accuracy)
        out.metric("per_class_accuracy", [float(cm[i, i] / counts[i]) if counts[i] else None for i in range(k)])
        constant = pred.size >= 2 and np.unique(pred).size == 1
        out.metric("constant_class", int(pred[0]) if constant else None)
        if constant:
            out.flag(f"constant predictions: every sample predicted as class {int(pred[0])}")
        # One baseline check for every classifier, constant or not (a constant one can sit below the baseline when
        # it predicts a minority class); with a single class in the labels the baseline is trivially 100%.
        baseline = baseline_flag(accuracy, majority_accuracy, majority) if np.unique(y).size > 1 else None
        if pred.size >= 2 and baseline:
            out.flag(baseline)
        out.figure(heatmap(cm, "confusion matrix", "predicted class", "true class", cmap="Blues"), "confusion")
