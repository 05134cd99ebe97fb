// conr_warp: CoNR's backward warp (official model/warplayer.py @ 660c4f7) as one Paddle custom CPU operator.
//
// out[n, c, y, x] = bilinear sample of x[n, c] at (x + fx, y + fy), where (fx, fy) are flow channels (2g, 2g + 1)
// of the channel group g that c belongs to (groups = flow channels / 2; one group is the plain warp). Sampling is
// grid_sample's bilinear / padding "border" / align_corners=True, with the grid built the way conr_paddle/warp.py
// builds it: linspace(-1, 1) + flow / ((size - 1) / 2), unnormalised by (g + 1) / 2 * (size - 1), clamped to
// [0, size - 1]. Only used inside exported graphs (conr_paddle/fast.py); the eager model keeps F.grid_sample.
//
// Why: Paddle 3.3.1's CPU grid_sample was a third of the exported step at 256 px. Here the sampling positions and
// weights are computed once per pixel and group, then every channel of the group is gathered from one plane.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "paddle/extension.h"

namespace {

struct Tap {
  int32_t i00, i01, i10, i11;  // flat indices into one H*W plane (clamped to valid pixels)
  float w00, w01, w10, w11;    // bilinear weights (0 for a neighbour outside the plane)
};

// Positions along one axis for linspace(-1, 1, size), in Paddle's own float32 arithmetic: a float32 step, the
// first half counted up from -1 and the second half down from 1 (measured bit-exact against paddle.linspace).
std::vector<float> Linspace(int64_t size) {
  std::vector<float> v(size);
  if (size == 1) {
    v[0] = -1.0f;
    return v;
  }
  const float step = 2.0f / static_cast<float>(size - 1);
  const int64_t half = size / 2;
  for (int64_t i = 0; i < size; ++i) {
    v[i] = i < half ? -1.0f + step * static_cast<float>(i) : 1.0f - step * static_cast<float>(size - 1 - i);
  }
  return v;
}

inline float SourceCoord(float base, float flow, float half_extent, int64_t size) {
  const float g = base + flow / half_extent;                   // normalised grid coordinate
  float s = (g + 1.0f) * static_cast<float>(static_cast<double>(size - 1) * 0.5);  // align_corners=True
  const float hi = static_cast<float>(size - 1);
  s = std::min(std::max(s, 0.0f), hi);  // padding_mode="border"
  return s;
}

// The four taps of output pixel (x, y) for flow (fx, fy) at that pixel.
inline Tap MakeTap(int64_t x, int64_t y, float fx, float fy, int64_t h, int64_t w, float lx, float ly, float hx,
                   float hy) {
  const float sx = SourceCoord(lx, fx, hx, w);
  const float sy = SourceCoord(ly, fy, hy, h);
  // sx, sy are clamped to [0, size - 1], so truncation is floor (and needs no libm call on baseline x86-64)
  const int64_t x0 = static_cast<int64_t>(sx);
  const int64_t y0 = static_cast<int64_t>(sy);
  const float ax = sx - static_cast<float>(x0);
  const float ay = sy - static_cast<float>(y0);
  const bool x1_in = x0 + 1 < w;
  const bool y1_in = y0 + 1 < h;
  const int64_t x1 = x1_in ? x0 + 1 : x0;
  const int64_t y1 = y1_in ? y0 + 1 : y0;
  const float bx = static_cast<float>(x0 + 1) - sx;  // distance to the right neighbour
  const float by = static_cast<float>(y0 + 1) - sy;  // distance to the lower neighbour
  Tap t;
  t.i00 = static_cast<int32_t>(y0 * w + x0);
  t.i01 = static_cast<int32_t>(y0 * w + x1);
  t.i10 = static_cast<int32_t>(y1 * w + x0);
  t.i11 = static_cast<int32_t>(y1 * w + x1);
  t.w00 = bx * by;
  t.w01 = x1_in ? ax * by : 0.0f;
  t.w10 = y1_in ? bx * ay : 0.0f;
  t.w11 = (x1_in && y1_in) ? ax * ay : 0.0f;
  return t;
}

inline float Sample(const float* s, const Tap& q) {
  return s[q.i00] * q.w00 + s[q.i01] * q.w01 + s[q.i10] * q.w10 + s[q.i11] * q.w11;
}

// Groups of at most this many channels sample straight from the flow (taps kept in registers); wider groups
// store the taps of a whole plane once and reuse them for every channel.
constexpr int64_t kDirectChannels = 8;
constexpr int64_t kChunk = 64;  // pixels per chunk of a row in the direct path

}  // namespace

std::vector<paddle::Tensor> ConrWarpForward(const paddle::Tensor& x, const paddle::Tensor& flow) {
  PD_CHECK(x.is_cpu(), "conr_warp: only CPU tensors are supported");
  PD_CHECK(x.dtype() == paddle::DataType::FLOAT32 && flow.dtype() == paddle::DataType::FLOAT32,
           "conr_warp: float32 tensors only");
  const auto xs = x.shape();
  const auto fs = flow.shape();
  PD_CHECK(xs.size() == 4 && fs.size() == 4, "conr_warp: x and flow must be 4-D (N, C, H, W)");
  const int64_t n = xs[0], c = xs[1], h = xs[2], w = xs[3];
  PD_CHECK(fs[0] == n && fs[2] == h && fs[3] == w && fs[1] % 2 == 0 && fs[1] > 0,
           "conr_warp: flow must be (N, 2G, H, W) with the N, H, W of x");
  const int64_t groups = fs[1] / 2;
  PD_CHECK(c % groups == 0, "conr_warp: channels must divide into flow groups");
  const int64_t per_group = c / groups;
  const int64_t plane = h * w;
  PD_CHECK(plane < (int64_t{1} << 31), "conr_warp: planes of 2^31 pixels or more are not supported");

  auto out = paddle::empty(xs, paddle::DataType::FLOAT32, paddle::CPUPlace());
  const float* src = x.data<float>();
  const float* fl = flow.data<float>();
  float* dst = out.data<float>();
  const std::vector<float> lx = Linspace(w), ly = Linspace(h);
  const int64_t jobs = n * groups;
  const float hx = (static_cast<float>(w) - 1.0f) / 2.0f;
  const float hy = (static_cast<float>(h) - 1.0f) / 2.0f;
  if (per_group <= kDirectChannels) {
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < jobs * h; ++row) {
      const int64_t job = row / h, y = row % h;
      const int64_t b = job / groups, g = job % groups;
      const float* fx = fl + (b * 2 * groups + 2 * g) * plane;
      const float* fy = fx + plane;
      const int64_t ch0 = b * c + g * per_group;
      // a row in chunks: positions and weights in plain loops over arrays (the compiler vectorises them), then
      // the gathers channel by channel
      for (int64_t x0 = 0; x0 < w; x0 += kChunk) {
        const int64_t n_px = std::min(kChunk, w - x0);
        const int64_t p0 = y * w + x0;
        float sx[kChunk], sy[kChunk], w00[kChunk], w01[kChunk], w10[kChunk], w11[kChunk];
        int32_t i00[kChunk], i01[kChunk], i10[kChunk], i11[kChunk];
        for (int64_t i = 0; i < n_px; ++i) {
          sx[i] = SourceCoord(lx[x0 + i], fx[p0 + i], hx, w);
          sy[i] = SourceCoord(ly[y], fy[p0 + i], hy, h);
        }
        const int32_t wi = static_cast<int32_t>(w), hi = static_cast<int32_t>(h);
        for (int64_t i = 0; i < n_px; ++i) {
          const int32_t xa = static_cast<int32_t>(sx[i]);  // clamped to >= 0: truncation is floor
          const int32_t ya = static_cast<int32_t>(sy[i]);
          const float ax = sx[i] - static_cast<float>(xa), ay = sy[i] - static_cast<float>(ya);
          const float bx = static_cast<float>(xa + 1) - sx[i], by = static_cast<float>(ya + 1) - sy[i];
          const bool x1_in = xa + 1 < wi, y1_in = ya + 1 < hi;
          const int32_t xb = x1_in ? xa + 1 : xa, yb = y1_in ? ya + 1 : ya;
          i00[i] = ya * wi + xa;
          i01[i] = ya * wi + xb;
          i10[i] = yb * wi + xa;
          i11[i] = yb * wi + xb;
          w00[i] = bx * by;
          w01[i] = x1_in ? ax * by : 0.0f;
          w10[i] = y1_in ? bx * ay : 0.0f;
          w11[i] = (x1_in && y1_in) ? ax * ay : 0.0f;
        }
        for (int64_t k = 0; k < per_group; ++k) {
          const float* s = src + (ch0 + k) * plane;
          float* d = dst + (ch0 + k) * plane + p0;
          for (int64_t i = 0; i < n_px; ++i) {
            d[i] = s[i00[i]] * w00[i] + s[i01[i]] * w01[i] + s[i10[i]] * w10[i] + s[i11[i]] * w11[i];
          }
        }
      }
    }
    return {out};
  }
  std::vector<Tap> taps(static_cast<size_t>(plane));
  for (int64_t job = 0; job < jobs; ++job) {
    const int64_t b = job / groups, g = job % groups;
    const float* fx = fl + (b * 2 * groups + 2 * g) * plane;
    const float* fy = fx + plane;
    Tap* t = taps.data();
#pragma omp parallel for schedule(static)
    for (int64_t y = 0; y < h; ++y) {
      for (int64_t x = 0; x < w; ++x) {
        t[y * w + x] = MakeTap(x, y, fx[y * w + x], fy[y * w + x], h, w, lx[x], ly[y], hx, hy);
      }
    }
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < per_group; ++k) {
      const int64_t ch = b * c + g * per_group + k;
      const float* s = src + ch * plane;
      float* d = dst + ch * plane;
      for (int64_t p = 0; p < plane; ++p) d[p] = Sample(s, t[p]);
    }
  }
  return {out};
}

std::vector<std::vector<int64_t>> ConrWarpInferShape(const std::vector<int64_t>& x_shape,
                                                     const std::vector<int64_t>& flow_shape) {
  return {x_shape};
}

std::vector<paddle::DataType> ConrWarpInferDtype(const paddle::DataType& x_dtype,
                                                 const paddle::DataType& flow_dtype) {
  return {x_dtype};
}

PD_BUILD_OP(conr_warp)
    .Inputs({"X", "Flow"})
    .Outputs({"Out"})
    .SetKernelFn(PD_KERNEL(ConrWarpForward))
    .SetInferShapeFn(PD_INFER_SHAPE(ConrWarpInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(ConrWarpInferDtype));

// ------------------------------------------------------------------------------------------------------------
// conr_resize: bilinear resize with half-pixel centres (interpolate(mode="bilinear", align_corners=False,
// align_mode=0)), the index arithmetic of Paddle's bilinear_interp CPU kernel: ratio = in / out, source
// max(ratio * (i + 0.5) - 0.5, 0), lower neighbour floor(source), upper clamped to the last pixel. Exported in
// place of bilinear_interp, which Paddle 3.3.1 cannot run under oneDNN placement (conr_paddle/fast.py).

namespace {

struct AxisTaps {
  std::vector<int64_t> lo, hi;
  std::vector<float> a;  // weight of `hi`
};

AxisTaps ResizeTaps(int64_t in, int64_t out) {
  AxisTaps t;
  t.lo.resize(out);
  t.hi.resize(out);
  t.a.resize(out);
  const float ratio = static_cast<float>(in) / static_cast<float>(out);
  for (int64_t i = 0; i < out; ++i) {
    float src = ratio * (static_cast<float>(i) + 0.5f) - 0.5f;
    src = src > 0.0f ? src : 0.0f;
    const int64_t lo = static_cast<int64_t>(src);
    t.lo[i] = lo;
    t.hi[i] = lo + (lo < in - 1 ? 1 : 0);
    t.a[i] = src - static_cast<float>(lo);
  }
  return t;
}

}  // namespace

std::vector<paddle::Tensor> ConrResizeForward(const paddle::Tensor& x, int64_t out_h, int64_t out_w) {
  PD_CHECK(x.is_cpu(), "conr_resize: only CPU tensors are supported");
  PD_CHECK(x.dtype() == paddle::DataType::FLOAT32, "conr_resize: float32 tensors only");
  const auto xs = x.shape();
  PD_CHECK(xs.size() == 4, "conr_resize: x must be 4-D (N, C, H, W)");
  PD_CHECK(out_h > 0 && out_w > 0, "conr_resize: output size must be positive");
  const int64_t planes = xs[0] * xs[1], h = xs[2], w = xs[3];
  auto out = paddle::empty({xs[0], xs[1], out_h, out_w}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  const AxisTaps ty = ResizeTaps(h, out_h), tx = ResizeTaps(w, out_w);
  const float* src = x.data<float>();
  float* dst = out.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float* s = src + pl * h * w;
    float* d = dst + pl * out_h * out_w;
    for (int64_t i = 0; i < out_h; ++i) {
      const float* r0 = s + ty.lo[i] * w;
      const float* r1 = s + ty.hi[i] * w;
      const float ay = ty.a[i], by = 1.0f - ty.a[i];
      float* o = d + i * out_w;
      for (int64_t j = 0; j < out_w; ++j) {
        const float ax = tx.a[j], bx = 1.0f - tx.a[j];
        o[j] = by * (bx * r0[tx.lo[j]] + ax * r0[tx.hi[j]]) + ay * (bx * r1[tx.lo[j]] + ax * r1[tx.hi[j]]);
      }
    }
  }
  return {out};
}

std::vector<std::vector<int64_t>> ConrResizeInferShape(const std::vector<int64_t>& x_shape, int64_t out_h,
                                                       int64_t out_w) {
  return {{x_shape[0], x_shape[1], out_h, out_w}};
}

std::vector<paddle::DataType> ConrResizeInferDtype(const paddle::DataType& x_dtype) { return {x_dtype}; }

PD_BUILD_OP(conr_resize)
    .Inputs({"X"})
    .Outputs({"Out"})
    .Attrs({"out_h: int64_t", "out_w: int64_t"})
    .SetKernelFn(PD_KERNEL(ConrResizeForward))
    .SetInferShapeFn(PD_INFER_SHAPE(ConrResizeInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(ConrResizeInferDtype));

// ------------------------------------------------------------------------------------------------------------
// conr_fuse: the weighted sums of the shader's cross-view fusion (conr_paddle/shader.py fuse_views) in one pass.
// weight (B*M, K, H, W) = softmax over views of the mask times the mask (computed by the graph: oneDNN's softmax
// is vectorised), flow (B*M, 2, H, W), wref (B*M, R, H, W), message (B*M, K - 2, H, W) -> fused flow
// (B, 2, H, W), fused reference (B, R, H, W), fused message (B, K - 2, H, W). Weight channel 0 weighs flow and
// reference, channel k >= 2 message channel k - 2, channel 1 is unused. Replaces four slices, four broadcast
// multiplies and three reduce-sums, each a full pass over the level's tensors.

std::vector<paddle::Tensor> ConrFuseForward(const paddle::Tensor& weight, const paddle::Tensor& flow,
                                            const paddle::Tensor& wref, const paddle::Tensor& message,
                                            int64_t views) {
  for (const paddle::Tensor* t : {&weight, &flow, &wref, &message}) {
    PD_CHECK(t->is_cpu() && t->dtype() == paddle::DataType::FLOAT32, "conr_fuse: float32 CPU tensors only");
    PD_CHECK(t->shape().size() == 4, "conr_fuse: inputs must be 4-D (B*M, C, H, W)");
  }
  const auto ws = weight.shape();
  const int64_t bm = ws[0], k = ws[1], h = ws[2], w = ws[3], plane = h * w;
  PD_CHECK(views >= 1 && bm % views == 0, "conr_fuse: batch must be a multiple of views");
  PD_CHECK(k >= 2, "conr_fuse: weight needs at least 2 channels");
  const int64_t b = bm / views, r = wref.shape()[1];
  for (const paddle::Tensor* t : {&flow, &wref, &message}) {
    const auto s = t->shape();
    PD_CHECK(s[0] == bm && s[2] == h && s[3] == w, "conr_fuse: inputs must share batch and plane with weight");
  }
  PD_CHECK(flow.shape()[1] == 2, "conr_fuse: flow must have 2 channels");
  PD_CHECK(message.shape()[1] == k - 2, "conr_fuse: message must have weight channels - 2");
  auto out_flow = paddle::empty({b, 2, h, w}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto out_wref = paddle::empty({b, r, h, w}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto out_msg = paddle::empty({b, k - 2, h, w}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  const float* pw = weight.data<float>();
  const float* pf = flow.data<float>();
  const float* pr = wref.data<float>();
  const float* pg = message.data<float>();
  float* of = out_flow.data<float>();
  float* orf = out_wref.data<float>();
  float* og = out_msg.data<float>();
  // one job per fused output plane: (b, c) over the 2 + R + (K - 2) output channels
  const int64_t per_b = 2 + r + (k - 2);
  const int64_t jobs = b * per_b;
#pragma omp parallel for schedule(static)
  for (int64_t job = 0; job < jobs; ++job) {
    const int64_t bi = job / per_b, c = job % per_b;
    const float* src;
    int64_t src_channels, src_c, wk;
    float* dst;
    if (c < 2) {
      src = pf, src_channels = 2, src_c = c, wk = 0, dst = of + (bi * 2 + c) * plane;
    } else if (c < 2 + r) {
      src = pr, src_channels = r, src_c = c - 2, wk = 0, dst = orf + (bi * r + c - 2) * plane;
    } else {
      src = pg, src_channels = k - 2, src_c = c - 2 - r, wk = c - r, dst = og + (bi * (k - 2) + c - 2 - r) * plane;
    }
    for (int64_t j = 0; j < views; ++j) {
      const float* wj = pw + ((bi * views + j) * k + wk) * plane;
      const float* xj = src + ((bi * views + j) * src_channels + src_c) * plane;
      if (j == 0) {
        for (int64_t p = 0; p < plane; ++p) dst[p] = wj[p] * xj[p];
      } else {
        for (int64_t p = 0; p < plane; ++p) dst[p] += wj[p] * xj[p];
      }
    }
  }
  return {out_flow, out_wref, out_msg};
}

std::vector<std::vector<int64_t>> ConrFuseInferShape(const std::vector<int64_t>& weight_shape,
                                                     const std::vector<int64_t>& flow_shape,
                                                     const std::vector<int64_t>& wref_shape,
                                                     const std::vector<int64_t>& message_shape, int64_t views) {
  const int64_t b = weight_shape[0] / views;
  return {{b, 2, weight_shape[2], weight_shape[3]},
          {b, wref_shape[1], weight_shape[2], weight_shape[3]},
          {b, message_shape[1], weight_shape[2], weight_shape[3]}};
}

std::vector<paddle::DataType> ConrFuseInferDtype(const paddle::DataType& weight, const paddle::DataType& flow,
                                                 const paddle::DataType& wref, const paddle::DataType& message) {
  return {weight, weight, weight};
}

PD_BUILD_OP(conr_fuse)
    .Inputs({"Weight", "Flow", "Wref", "Message"})
    .Outputs({"FusedFlow", "FusedWref", "FusedMessage"})
    .Attrs({"views: int64_t"})
    .SetKernelFn(PD_KERNEL(ConrFuseForward))
    .SetInferShapeFn(PD_INFER_SHAPE(ConrFuseInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(ConrFuseInferDtype));
