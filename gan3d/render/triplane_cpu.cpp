// Tri-plane lookup on CPU: the bilinear, zero-padded, align_corners=True sampling of
// gan3d.render.triplane.sample_triplane (xy, xz, yz planes, averaged), without grid_sample's two costs
// there: it reads planes channel by channel (a strided load per channel and corner), and its backward
// scatters channel by channel. Here the channels of a texel are contiguous (planes in a channels-last
// layout), so every corner is one short vector load (forward) or add (backward), the mean over the
// three planes is fused, and the features come out as [B, N, C] for the decoder with no transpose.
// The backward is parallel over (sample, plane) pairs, whose gradient texels are disjoint: no atomics.
// Gradients flow to the planes only; the points are constants in training (camera rays).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

namespace {

struct Corner {
  int64_t offset;  // element offset of the texel within its plane (y * stride_y + x * stride_x)
  float weight;
};

// The four bilinear corners of (gx, gy) in [-1, 1] on an H x W plane (align_corners=True: -1 and 1 are the
// centres of the border texels); corners outside the plane get weight 0 (zeros padding).
inline int corners(float gx, float gy, int64_t H, int64_t W, int64_t sy, int64_t sx, Corner* out) {
  if (!std::isfinite(gx) || !std::isfinite(gy)) return 0;
  const float ix = (gx + 1.f) / 2.f * static_cast<float>(W - 1);
  const float iy = (gy + 1.f) / 2.f * static_cast<float>(H - 1);
  if (ix <= -1.f || iy <= -1.f || ix >= static_cast<float>(W) || iy >= static_cast<float>(H)) return 0;
  const float fx0 = std::floor(ix), fy0 = std::floor(iy);
  const int64_t x0 = static_cast<int64_t>(fx0), y0 = static_cast<int64_t>(fy0);
  const float wx1 = ix - fx0, wy1 = iy - fy0;  // weights of the x0 + 1 / y0 + 1 side
  const float wx0 = (fx0 + 1.f) - ix, wy0 = (fy0 + 1.f) - iy;
  int n = 0;
  const int64_t xs[2] = {x0, x0 + 1}, ys[2] = {y0, y0 + 1};
  const float wxs[2] = {wx0, wx1}, wys[2] = {wy0, wy1};
  for (int j = 0; j < 2; ++j) {    // nw, ne, sw, se: grid_sample's order
    for (int i = 0; i < 2; ++i) {
      if (xs[i] >= 0 && xs[i] < W && ys[j] >= 0 && ys[j] < H) out[n++] = {ys[j] * sy + xs[i] * sx, wxs[i] * wys[j]};
    }
  }
  return n;
}

// plane p reads point coordinates (u, v): xy -> (x, y), xz -> (x, z), yz -> (y, z)
constexpr int kU[3] = {0, 0, 1};
constexpr int kV[3] = {1, 2, 2};

void check(const at::Tensor& planes, const at::Tensor& points) {
  TORCH_CHECK(planes.device().is_cpu() && points.device().is_cpu(), "triplane kernel: CPU tensors expected");
  TORCH_CHECK(planes.scalar_type() == at::kFloat && points.scalar_type() == at::kFloat,
              "triplane kernel: float32 planes and points expected");
  TORCH_CHECK(planes.dim() == 5 && planes.size(1) == 3 && planes.stride(2) == 1,
              "triplane kernel: planes [B, 3, C, H, W] with unit channel stride expected");
  TORCH_CHECK(points.dim() == 3 && points.size(2) == 3 && points.size(0) == planes.size(0) && points.is_contiguous(),
              "triplane kernel: contiguous points [B, N, 3] expected");
}

// planes [B, 3, C, H, W] (channel stride 1), points [B, N, 3] -> features [B, N, C], the mean of the planes
at::Tensor triplane_forward(const at::Tensor& planes, const at::Tensor& points) {
  check(planes, points);
  const int64_t B = planes.size(0), C = planes.size(2), H = planes.size(3), W = planes.size(4), N = points.size(1);
  const int64_t sb = planes.stride(0), sp = planes.stride(1), sy = planes.stride(3), sx = planes.stride(4);
  at::Tensor out = at::empty({B, N, C}, planes.options());
  const float* P = planes.data_ptr<float>();
  const float* X = points.data_ptr<float>();
  float* O = out.data_ptr<float>();
  at::parallel_for(0, B * N, 256, [&](int64_t begin, int64_t end) {
    Corner cs[4];
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / N;
      const float* x = X + i * 3;
      float* __restrict__ o = O + i * C;
      for (int64_t c = 0; c < C; ++c) o[c] = 0.f;
      for (int p = 0; p < 3; ++p) {
        const float* plane = P + b * sb + p * sp;
        const int n = corners(x[kU[p]], x[kV[p]], H, W, sy, sx, cs);
        for (int k = 0; k < n; ++k) {
          const float* __restrict__ t = plane + cs[k].offset;
          const float w = cs[k].weight;
          for (int64_t c = 0; c < C; ++c) o[c] += w * t[c];
        }
      }
      for (int64_t c = 0; c < C; ++c) o[c] /= 3.f;
    }
  });
  return out;
}

// grad_out [B, N, C] -> grad_planes shaped and laid out like planes
at::Tensor triplane_backward(const at::Tensor& grad_out, const at::Tensor& planes, const at::Tensor& points) {
  check(planes, points);
  const at::Tensor g = grad_out.contiguous();
  const int64_t B = planes.size(0), C = planes.size(2), H = planes.size(3), W = planes.size(4), N = points.size(1);
  const int64_t sb = planes.stride(0), sp = planes.stride(1), sy = planes.stride(3), sx = planes.stride(4);
  at::Tensor grad = at::zeros_like(planes);  // keeps planes' strides (dense layouts)
  TORCH_CHECK(grad.strides() == planes.strides(), "triplane kernel: dense planes expected");
  const float* G = g.data_ptr<float>();
  const float* X = points.data_ptr<float>();
  float* D = grad.data_ptr<float>();
  at::parallel_for(0, B * 3, 1, [&](int64_t begin, int64_t end) {
    Corner cs[4];
    for (int64_t bp = begin; bp < end; ++bp) {
      const int64_t b = bp / 3;
      const int p = static_cast<int>(bp % 3);
      float* plane = D + b * sb + p * sp;
      for (int64_t i = b * N; i < (b + 1) * N; ++i) {
        const float* x = X + i * 3;
        const float* __restrict__ go = G + i * C;
        const int n = corners(x[kU[p]], x[kV[p]], H, W, sy, sx, cs);
        for (int k = 0; k < n; ++k) {
          float* __restrict__ t = plane + cs[k].offset;
          const float w = cs[k].weight / 3.f;
          for (int64_t c = 0; c < C; ++c) t[c] += w * go[c];
        }
      }
    }
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY(gan3d, m) {
  m.def("triplane_forward(Tensor planes, Tensor points) -> Tensor");
  m.def("triplane_backward(Tensor grad_out, Tensor planes, Tensor points) -> Tensor");
}

TORCH_LIBRARY_IMPL(gan3d, CPU, m) {
  m.impl("triplane_forward", &triplane_forward);
  m.impl("triplane_backward", &triplane_backward);
}
