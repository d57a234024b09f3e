"""featcache.evaluate: metrics, prediction, reports and edge export for trained students.

Light imports only here (numpy/scipy); predict, report and export load torch when imported.
"""

from featcache.evaluate.accumulator import POOLED_LABEL, MetricAccumulator
from featcache.evaluate.metrics import (
    EMPTY_AS_ONE,
    EMPTY_EXCLUDED,
    METRICS,
    all_metrics,
    dice,
    hd95,
    iou,
    precision,
    recall,
)
from featcache.evaluate.outputs import (
    eval_overlay_path,
    read_eval_summary,
    read_per_image,
    write_eval_outputs,
)

__all__ = ["EMPTY_AS_ONE", "EMPTY_EXCLUDED", "METRICS", "POOLED_LABEL", "MetricAccumulator", "all_metrics",
           "dice", "eval_overlay_path", "hd95", "iou", "precision", "read_eval_summary", "read_per_image",
           "recall", "write_eval_outputs"]
