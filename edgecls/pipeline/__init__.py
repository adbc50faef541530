"""``edgecls pipeline``: train → prune → distill → quantize → export → bench from one TOML file,
re-running only what changed, with one side-by-side report."""

from edgecls.pipeline.config import PipelineConfig, load_pipeline_config
from edgecls.pipeline.runner import PipelineResult, run_pipeline

__all__ = ["PipelineConfig", "PipelineResult", "load_pipeline_config", "run_pipeline"]
