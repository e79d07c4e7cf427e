"""Pure tensor functions: cameras, rays, tri-plane sampling, volume integration. No parameters owned."""
from gan3d.render.cameras import cam2world_matrix, sample_camera_angles
from gan3d.render.rays import ray_directions, stratified_depths, importance_depths
from gan3d.render.triplane import sample_triplane
from gan3d.render.volume import integrate

__all__ = ["cam2world_matrix", "sample_camera_angles", "ray_directions", "stratified_depths",
           "importance_depths", "sample_triplane", "integrate"]
