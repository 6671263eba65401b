"""Heatmap jobs: many images, one model, on this machine or on a Ray cluster.

A job takes images from folders, globs or manifests (:func:`collect_images`), computes for
each the classification and the heatmap of one method (:class:`JobConfig`), and writes an
overlay picture and one results row per image into an output folder (Parquet, JSON lines and
``report.html``), resumably (:func:`run_job`). See ``spec/jobs.md``.
"""

from dlheatmap.jobs.config import JobConfig, JobError, load_model, preprocess_param
from dlheatmap.jobs.engine import ENGINES, JobSummary, run_job
from dlheatmap.jobs.methods import HALCON_METHODS, METHODS, Method
from dlheatmap.jobs.sources import collect_images
from dlheatmap.jobs.worker import HeatmapWorker, heatmap_statistics

__all__ = ["ENGINES", "HALCON_METHODS", "METHODS", "HeatmapWorker", "JobConfig", "JobError",
           "JobSummary", "Method", "collect_images", "heatmap_statistics", "load_model",
           "preprocess_param", "run_job"]
