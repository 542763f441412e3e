"""Layer 6: features: optical flow and relative depth of face crops, their encodings as the pictures
a detector sees, and the features stage over a work directory. Re-exports each module's public names.
"""

from .depth import DEPTH_MODELS, DepthConfig, DepthEstimator, check_depth, depth_anything_config, depth_to_rgb
from .flow import FLOW_METHODS, FlowConfig, FlowEstimator, check_flow, flow_to_rgb
from .stage import compute_features, feature_configs, load_feature, run_features

__all__ = ["DEPTH_MODELS", "DepthConfig", "DepthEstimator", "FLOW_METHODS", "FlowConfig", "FlowEstimator", "check_depth", "check_flow", "compute_features", "depth_anything_config", "depth_to_rgb", "feature_configs", "flow_to_rgb", "load_feature", "run_features"]
