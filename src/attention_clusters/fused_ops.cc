// Fused CPU kernels of the Attention Cluster's training step (MindSpore AOT custom operators).
//
// Each function has MindSpore's AOT signature: params holds the inputs, then the outputs;
// shapes[i] / ndims[i] describe params[i]. All tensors are dense row-major float32 unless noted.
// The loops run on one thread in a fixed order, so a result is a function of the inputs alone.
// A non-zero return makes MindSpore raise.
#include <cmath>
#include <cstdint>

namespace {

constexpr float kNormEps = 1e-12f;  // models/attention_cluster.py NORM_EPS

int64_t Count(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  return n;
}

// x[0..n) <- softmax(x), in place; returns logsumexp(x) of the input.
float Softmax(float *x, int64_t n) {
  float top = x[0];
  for (int64_t j = 0; j < n; j++) top = x[j] > top ? x[j] : top;
  for (int64_t j = 0; j < n; j++) x[j] = expf(x[j] - top);
  float sum = 0.f;
  for (int64_t j = 0; j < n; j++) sum += x[j];
  const float inv = 1.f / sum;
  for (int64_t j = 0; j < n; j++) x[j] *= inv;
  return top + logf(sum);
}

}  // namespace

// Cross-entropy of softmax(z + b) against labels y (SPEC 7), per sample.
// In: z (N, K) logits without bias, b (K), y (N) int32 in [0, K).
// Out: nll (N) = logsumexp(z_n + b) - (z_n + b)[y_n]; p (N, K) = softmax(z_n + b) (for the gradient).
extern "C" int SoftmaxNllForward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  const float *z = static_cast<const float *>(params[0]);
  const float *b = static_cast<const float *>(params[1]);
  const int32_t *y = static_cast<const int32_t *>(params[2]);
  float *nll = static_cast<float *>(params[3]);
  float *p = static_cast<float *>(params[4]);
  const int64_t n_rows = shapes[0][0], k = shapes[0][1];
  for (int64_t n = 0; n < n_rows; n++) {
    if (y[n] < 0 || y[n] >= k) return 1;
    const float *zn = z + n * k;
    float *pn = p + n * k;
    for (int64_t j = 0; j < k; j++) pn[j] = zn[j] + b[j];
    const float target = pn[y[n]];
    nll[n] = Softmax(pn, k) - target;
  }
  return 0;
}

// Gradient of SoftmaxNllForward. In: p (N, K) softmax, y (N) int32, g (N) dLoss/dnll.
// Out: dz (N, K) = g_n (p_n - onehot(y_n)); db (K) = sum over n of dz_n.
extern "C" int SoftmaxNllBackward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  const float *p = static_cast<const float *>(params[0]);
  const int32_t *y = static_cast<const int32_t *>(params[1]);
  const float *g = static_cast<const float *>(params[2]);
  float *dz = static_cast<float *>(params[3]);
  float *db = static_cast<float *>(params[4]);
  const int64_t n_rows = shapes[0][0], k = shapes[0][1];
  for (int64_t j = 0; j < k; j++) db[j] = 0.f;
  for (int64_t n = 0; n < n_rows; n++) {
    if (y[n] < 0 || y[n] >= k) return 1;
    const float *pn = p + n * k;
    float *dn = dz + n * k;
    for (int64_t j = 0; j < k; j++) dn[j] = pn[j] * g[n];
    dn[y[n]] -= g[n];
    for (int64_t j = 0; j < k; j++) db[j] += dn[j];
  }
  return 0;
}

// Shifting operation (paper section 3.3; SPEC 6): u = w_c v + b_c, o = u / max(||u||_2, eps) / sqrt(C).
// In: v (N, C, F), w (C), b (C) (any shape holding C values). Out: o (N, C, F); r (N, C) = 1 / max(||u||, eps).
extern "C" int ShiftNormForward(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const float *v = static_cast<const float *>(params[0]);
  const float *w = static_cast<const float *>(params[1]);
  const float *b = static_cast<const float *>(params[2]);
  float *o = static_cast<float *>(params[3]);
  float *r = static_cast<float *>(params[4]);
  const int64_t c = shapes[0][1], f = shapes[0][2], rows = shapes[0][0] * c;
  if (Count(ndims[1], shapes[1]) != c || Count(ndims[2], shapes[2]) != c) return 1;
  const float scale = 1.f / std::sqrt(static_cast<float>(c));
  for (int64_t i = 0; i < rows; i++) {
    const float *vi = v + i * f;
    float *oi = o + i * f;
    const float wi = w[i % c], bi = b[i % c];
    float sq = 0.f;
    for (int64_t j = 0; j < f; j++) {
      oi[j] = wi * vi[j] + bi;
      sq += oi[j] * oi[j];
    }
    const float norm = std::sqrt(sq);
    r[i] = 1.f / (norm > kNormEps ? norm : kNormEps);
    const float s = r[i] * scale;
    for (int64_t j = 0; j < f; j++) oi[j] *= s;
  }
  return 0;
}

// Gradient of ShiftNormForward. In: g (N, C, F) dLoss/do, v (N, C, F), w (C), b (C), r (N, C).
// Out: dv (N, C, F), dw (C), db (C), shaped as w and b. With u as above and s = 1 / sqrt(C):
// du = s r (g - [||u|| > eps] u r^2 (u . g)); dv = w_c du; dw_c = sum of du v; db_c = sum of du.
extern "C" int ShiftNormBackward(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const float *g = static_cast<const float *>(params[0]);
  const float *v = static_cast<const float *>(params[1]);
  const float *w = static_cast<const float *>(params[2]);
  const float *b = static_cast<const float *>(params[3]);
  const float *r = static_cast<const float *>(params[4]);
  float *dv = static_cast<float *>(params[5]);
  float *dw = static_cast<float *>(params[6]);
  float *db = static_cast<float *>(params[7]);
  const int64_t c = shapes[0][1], f = shapes[0][2], rows = shapes[0][0] * c;
  if (Count(ndims[2], shapes[2]) != c || Count(ndims[3], shapes[3]) != c) return 1;
  const float scale = 1.f / std::sqrt(static_cast<float>(c));
  for (int64_t j = 0; j < c; j++) dw[j] = db[j] = 0.f;
  for (int64_t i = 0; i < rows; i++) {
    const float *gi = g + i * f, *vi = v + i * f;
    float *dvi = dv + i * f;
    const float wi = w[i % c], bi = b[i % c];
    float dot = 0.f, sq = 0.f;
    for (int64_t j = 0; j < f; j++) {
      const float u = wi * vi[j] + bi;
      dot += u * gi[j];
      sq += u * u;
    }
    const float k = std::sqrt(sq) > kNormEps ? r[i] * r[i] * dot : 0.f;  // max's gradient: only ||u|| > eps
    const float s = r[i] * scale;
    float sw = 0.f, sb = 0.f;
    for (int64_t j = 0; j < f; j++) {
      const float du = s * (gi[j] - (wi * vi[j] + bi) * k);
      dvi[j] = wi * du;
      sw += du * vi[j];
      sb += du;
    }
    dw[i % c] += sw;
    db[i % c] += sb;
  }
  return 0;
}

// Hidden layer of the fc=2 scoring network (SPEC 6): t = tanh(z + b).
// In: z (M, H) products without the bias, b (H). Out: t (M, H).
extern "C" int BiasTanhForward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  const float *z = static_cast<const float *>(params[0]);
  const float *b = static_cast<const float *>(params[1]);
  float *t = static_cast<float *>(params[2]);
  const int64_t rows = shapes[0][0], h = shapes[0][1];
  for (int64_t i = 0; i < rows; i++) {
    for (int64_t j = 0; j < h; j++) t[i * h + j] = tanhf(z[i * h + j] + b[j]);
  }
  return 0;
}

// Gradient of BiasTanhForward. In: t (M, H) its output, g (M, H) dLoss/dt.
// Out: dz (M, H) = g (1 - t^2); db (H) = sum over rows of dz.
extern "C" int BiasTanhBackward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  const float *t = static_cast<const float *>(params[0]);
  const float *g = static_cast<const float *>(params[1]);
  float *dz = static_cast<float *>(params[2]);
  float *db = static_cast<float *>(params[3]);
  const int64_t rows = shapes[0][0], h = shapes[0][1];
  for (int64_t j = 0; j < h; j++) db[j] = 0.f;
  for (int64_t i = 0; i < rows; i++) {
    for (int64_t j = 0; j < h; j++) {
      dz[i * h + j] = g[i * h + j] * (1.f - t[i * h + j] * t[i * h + j]);
      db[j] += dz[i * h + j];
    }
  }
  return 0;
}

// Attention weights (SPEC 6): a softmax over the L frames of each unit's scores, transposed.
// In: s (N, L, C). Out: a (N, C, L), a[n, c, :] = softmax(s[n, :, c]).
extern "C" int FrameSoftmaxForward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  const float *s = static_cast<const float *>(params[0]);
  float *a = static_cast<float *>(params[1]);
  const int64_t n_rows = shapes[0][0], frames = shapes[0][1], c = shapes[0][2];
  for (int64_t n = 0; n < n_rows; n++) {
    const float *sn = s + n * frames * c;
    for (int64_t u = 0; u < c; u++) {
      float *au = a + (n * c + u) * frames;
      for (int64_t l = 0; l < frames; l++) au[l] = sn[l * c + u];
      Softmax(au, frames);
    }
  }
  return 0;
}

// Gradient of FrameSoftmaxForward. In: a (N, C, L) its output, g (N, C, L) dLoss/da.
// Out: ds (N, L, C), ds[n, l, c] = a[n, c, l] (g[n, c, l] - sum over l' of a[n, c, l'] g[n, c, l']).
extern "C" int FrameSoftmaxBackward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  const float *a = static_cast<const float *>(params[0]);
  const float *g = static_cast<const float *>(params[1]);
  float *ds = static_cast<float *>(params[2]);
  const int64_t n_rows = shapes[0][0], c = shapes[0][1], frames = shapes[0][2];
  for (int64_t n = 0; n < n_rows; n++) {
    for (int64_t u = 0; u < c; u++) {
      const float *au = a + (n * c + u) * frames, *gu = g + (n * c + u) * frames;
      float dot = 0.f;
      for (int64_t l = 0; l < frames; l++) dot += au[l] * gu[l];
      for (int64_t l = 0; l < frames; l++) ds[(n * frames + l) * c + u] = au[l] * (gu[l] - dot);
    }
  }
  return 0;
}
