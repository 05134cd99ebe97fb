// conr_warp: CoNR's backward warp (official model/warplayer.py @ 660c4f7) as one Paddle custom CPU operator.
//
// out[n, c, y, x] = bilinear sample of x[n, c] at (x + fx, y + fy), where (fx, fy) are flow channels (2g, 2g + 1)
// of the channel group g that c belongs to (groups = flow channels / 2; one group is the plain warp). Sampling is
// grid_sample's bilinear / padding "border" / align_corners=True, with the grid built the way conr_paddle/warp.py
// builds it: linspace(-1, 1) + flow / ((size - 1) / 2), unnormalised by (g + 1) / 2 * (size - 1), clamped to
// [0, size - 1]. Only used inside exported graphs (`export_ops` in conr_paddle/ops.py); the eager model keeps
// F.grid_sample.
//
// Why: Paddle 3.3.1's CPU grid_sample was a third of the exported step at 256 px. Here the sampling positions and
// weights are computed once per pixel and group, then every channel of the group is gathered from one plane.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "paddle/extension.h"

namespace {

// Bilinear taps of a run of output pixels, structure of arrays so that the loops filling them vectorise: flat
// indices into one H*W plane (clamped to valid pixels) and weights (0 for a neighbour outside the plane).
struct Taps {
  int32_t *i00, *i01, *i10, *i11;
  float *w00, *w01, *w10, *w11;

  Taps at(int64_t offset) const {
    return {i00 + offset, i01 + offset, i10 + offset, i11 + offset,
            w00 + offset, w01 + offset, w10 + offset, w11 + offset};
  }
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

// The plane's geometry: size and the identity grid (the eager warp's linspace) with its half extents.
struct Grid {
  int64_t h, w;
  std::vector<float> lx, ly;
  float hx, hy;

  Grid(int64_t h_, int64_t w_)
      : h(h_), w(w_), lx(Linspace(w_)), ly(Linspace(h_)),
        hx((static_cast<float>(w_) - 1.0f) / 2.0f), hy((static_cast<float>(h_) - 1.0f) / 2.0f) {}
};

constexpr int64_t kChunk = 64;  // pixels per run of a row whose positions are computed together

// Taps of the n <= kChunk pixels x0 .. x0 + n - 1 of row y, for flow planes fx, fy, into t[0 .. n).
void RowTaps(const Grid& g, const float* fx, const float* fy, int64_t y, int64_t x0, int64_t n, const Taps& t) {
  const int64_t p0 = y * g.w + x0;
  float sx[kChunk], sy[kChunk];
  for (int64_t i = 0; i < n; ++i) {
    sx[i] = SourceCoord(g.lx[x0 + i], fx[p0 + i], g.hx, g.w);
    sy[i] = SourceCoord(g.ly[y], fy[p0 + i], g.hy, g.h);
  }
  const int32_t wi = static_cast<int32_t>(g.w), hi = static_cast<int32_t>(g.h);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t i = 0; i < n; ++i) {
    // A NaN flow (NaN weights upstream) survives the clamp in SourceCoord and would become a wild index when cast:
    // sample pixel 0 instead and make the output NaN, so the NaN propagates as it does through grid_sample's
    // arithmetic, without reading outside the plane. (No -ffast-math: the self-comparison is a real NaN test.)
    const bool bad = !(sx[i] == sx[i]) || !(sy[i] == sy[i]);
    const float px = bad ? 0.0f : sx[i], py = bad ? 0.0f : sy[i];
    const int32_t xa = static_cast<int32_t>(px);  // clamped to >= 0: truncation is floor
    const int32_t ya = static_cast<int32_t>(py);
    const float ax = px - static_cast<float>(xa), ay = py - static_cast<float>(ya);
    const float bx = static_cast<float>(xa + 1) - px, by = static_cast<float>(ya + 1) - py;
    const bool x1_in = xa + 1 < wi, y1_in = ya + 1 < hi;
    const int32_t xb = x1_in ? xa + 1 : xa, yb = y1_in ? ya + 1 : ya;
    t.i00[i] = ya * wi + xa;
    t.i01[i] = ya * wi + xb;
    t.i10[i] = yb * wi + xa;
    t.i11[i] = yb * wi + xb;
    t.w00[i] = bad ? nan : bx * by;
    t.w01[i] = x1_in ? ax * by : 0.0f;
    t.w10[i] = y1_in ? bx * ay : 0.0f;
    t.w11[i] = (x1_in && y1_in) ? ax * ay : 0.0f;
  }
}

// d[i] = plane s sampled with taps t[i], for i < n.
inline void Gather(const float* s, const Taps& t, int64_t n, float* d) {
  for (int64_t i = 0; i < n; ++i) {
    d[i] = s[t.i00[i]] * t.w00[i] + s[t.i01[i]] * t.w01[i] + s[t.i10[i]] * t.w10[i] + s[t.i11[i]] * t.w11[i];
  }
}

// Groups of at most this many channels compute taps per run of a row and gather at once (stack arrays);
// wider groups store the taps of a whole plane once and reuse them for every channel.
constexpr int64_t kDirectChannels = 8;

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
  const Grid grid(h, w);
  const int64_t jobs = n * groups;  // one job per (sample, flow group)
  if (per_group <= kDirectChannels) {
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < jobs * h; ++row) {
      const int64_t job = row / h, y = row % h;
      const int64_t b = job / groups, g = job % groups;
      const float* fx = fl + (b * 2 * groups + 2 * g) * plane;
      const int64_t ch0 = b * c + g * per_group;
      int32_t i00[kChunk], i01[kChunk], i10[kChunk], i11[kChunk];
      float w00[kChunk], w01[kChunk], w10[kChunk], w11[kChunk];
      const Taps t{i00, i01, i10, i11, w00, w01, w10, w11};
      for (int64_t x0 = 0; x0 < w; x0 += kChunk) {
        const int64_t n_px = std::min(kChunk, w - x0);
        RowTaps(grid, fx, fx + plane, y, x0, n_px, t);
        for (int64_t k = 0; k < per_group; ++k) {
          Gather(src + (ch0 + k) * plane, t, n_px, dst + (ch0 + k) * plane + y * w + x0);
        }
      }
    }
    return {out};
  }
  std::vector<int32_t> idx(static_cast<size_t>(4 * plane));
  std::vector<float> wgt(static_cast<size_t>(4 * plane));
  const Taps taps{idx.data(), idx.data() + plane, idx.data() + 2 * plane, idx.data() + 3 * plane,
                  wgt.data(), wgt.data() + plane, wgt.data() + 2 * plane, wgt.data() + 3 * plane};
  for (int64_t job = 0; job < jobs; ++job) {
    const int64_t b = job / groups, g = job % groups;
    const float* fx = fl + (b * 2 * groups + 2 * g) * plane;
#pragma omp parallel for schedule(static)
    for (int64_t y = 0; y < h; ++y) {
      for (int64_t x0 = 0; x0 < w; x0 += kChunk) {
        RowTaps(grid, fx, fx + plane, y, x0, std::min(kChunk, w - x0), taps.at(y * w + x0));
      }
    }
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < per_group; ++k) {
      const int64_t ch = b * c + g * per_group + k;
      Gather(src + ch * plane, taps, plane, dst + ch * plane);
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
// place of bilinear_interp, which Paddle 3.3.1 cannot run under oneDNN placement (docs/predictor.md;
// `interpolate_for_export` in conr_paddle/ops.py).

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
