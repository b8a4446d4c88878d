// Branch-free, vectorisable log1p(exp(-a)) for a >= 0, in float and in double.
//
// libm's exp/log1p are scalar calls, so a loop over them runs at ~10 ns per element while NumPy's
// SIMD transcendentals run at ~1 ns. These versions use only +, -, *, compares, selects and bit
// casts, so GCC vectorises the calling loop at any ISA level, and -ffp-contract=off keeps every
// ISA's result bit-identical. Accuracy of softplus built on them: < 2 ulp from the exact value (checked
// against 50-digit mpmath on 800k points) over the whole range, subnormal results included; the tests
// pin <= 3 ulp against the float64 truth rounded to the dtype (tests/test_core_rewards.py).
//
//   exp(-a):    n = round(a / ln2), r = n*ln2 - a (Cody-Waite split, |r| <= ln2/2), exp(r) by its Taylor
//               polynomial, then scaled by 2^-n as two normal powers of two (so subnormal results are
//               rounded once, correctly, and underflow to 0 happens naturally).
//   log1p(u):   u in [0, 1]; log1p(u) = u * g(u) with g(u) = log1p(u) / u in [ln 2, 1] approximated by a
//               near-minimax polynomial (Chebyshev fit, mpmath.chebyfit(g, [0, 1], N)); max error of the
//               fit: 5.3e-9 with 10 float coefficients, 1.8e-18 with 22 double ones. No division, and a
//               tiny (even subnormal) u is multiplied by ~1, so it keeps every bit.
#pragma once

#include <cstdint>
#include <cstring>

namespace gail_robot {

template <typename T>
struct SoftplusTraits;

template <>
struct SoftplusTraits<float> {
  using Bits = std::uint32_t;
  static constexpr int kMantissa = 23;
  static constexpr float kBias = 127.0f;
  static constexpr float kShift = 8388608.0f;          // 2^23: exposes a small integer in the low bits
  static constexpr float kRound = 12582912.0f;         // 1.5 * 2^23: round-to-nearest-integer trick
  static constexpr float kClamp = 110.0f;              // exp(-110) < smallest subnormal / 2: result is 0
  static constexpr float kLn2Hi = 0.693145751953125f;  // ln 2 with zero low bits: n * kLn2Hi is exact
  static constexpr float kLn2Lo = 1.428606820309417232e-06f;
  static constexpr float kLog2e = 1.442695040888963407f;
  static constexpr int kExpDegree = 7;  // |r|^8 / 8! < 6e-9 relative
};

template <>
struct SoftplusTraits<double> {
  using Bits = std::uint64_t;
  static constexpr int kMantissa = 52;
  static constexpr double kBias = 1023.0;
  static constexpr double kShift = 4503599627370496.0;  // 2^52
  static constexpr double kRound = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double kClamp = 800.0;               // exp(-800) < smallest subnormal / 2
  static constexpr double kLn2Hi = 6.93147180369123816490e-01;
  static constexpr double kLn2Lo = 1.908214929270587816e-10;
  static constexpr double kLog2e = 1.442695040888963407;
  static constexpr int kExpDegree = 13;   // |r|^14 / 14! < 5e-18 relative
};

template <typename To, typename From>
inline To bit_cast_value(From from) {
  static_assert(sizeof(To) == sizeof(From), "bit cast between different sizes");
  To to;
  std::memcpy(&to, &from, sizeof(To));
  return to;
}

// Polynomial coefficients, computed at compile time.
struct ExpCoefficient {  // 1 / k!
  template <typename T>
  static constexpr T value(int k) {
    T c = T(1);
    for (int i = 2; i <= k; ++i) c /= T(i);
    return c;
  }
};
// g(u) = log1p(u) / u on [0, 1]: coefficient of u^k. Generated with mpmath (80 digits):
//   mpmath.chebyfit(lambda u: mpmath.log1p(u) / u if u else 1, [0, 1], N)  (highest power first).
struct Log1pOverUCoefficient {
  static constexpr int kFloatTerms = 10;
  static constexpr int kDoubleTerms = 22;
  template <typename T>
  static constexpr T value(int k) {
    if constexpr (sizeof(T) == sizeof(float)) {
      constexpr float c[kFloatTerms] = {
          -0.0031760570127516985f, 0.019542526453733444f, -0.056373611092567444f, 0.10543623566627502f,
          -0.1526966691017151f,    0.1966327428817749f,   -0.24951615929603577f,  0.33329710364341736f,
          -0.49999892711639404f,   1.0f};
      return c[kFloatTerms - 1 - k];
    } else {
      constexpr double c[kDoubleTerms] = {
          -1.6020216725538194e-05, 0.00019330794553431145, -0.0011093809681700342, 0.004047809893467512,
          -0.01061469636358553,    0.021511022653356974,   -0.03553052540144125,   0.05007742395391704,
          -0.06288754670783146,    0.07329015255534954,    -0.08207163680437429,   0.09055567515590733,
          -0.09992127821760016,    0.11109740896460193,    -0.12499817769513955,   0.14285696309567308,
          -0.16666665403691092,    0.19999999940349814,    -0.2499999999826481,    0.3333333333330646,
          -0.49999999999999833,    1.0};
      return c[kDoubleTerms - 1 - k];
    }
  }
};

// sum_{k=K..N} c_k x^(k-K) by Horner, unrolled at compile time: a runtime loop here would stop GCC
// from vectorising the caller's loop ("control flow in loop").
template <typename T, typename Coefficient, int K, int N>
struct Horner {
  static inline T eval(T x) {
    constexpr T c = Coefficient::template value<T>(K);
    if constexpr (K == N) {
      return c;
    } else {
      return Horner<T, Coefficient, K + 1, N>::eval(x) * x + c;
    }
  }
};

// 2^-k for an integer-valued k with 0 <= k <= bias - 1 (so the result is a normal number).
template <typename T>
inline T pow2_neg(T k) {
  using Tr = SoftplusTraits<T>;
  // (bias - k) + 2^m holds the integer bias - k in its low mantissa bits; shifting those bits into
  // the exponent field builds 2^-k directly.
  const auto bits = bit_cast_value<typename Tr::Bits>((Tr::kBias - k) + Tr::kShift);
  return bit_cast_value<T>(static_cast<typename Tr::Bits>(bits << Tr::kMantissa));
}

// exp(-a) for 0 <= a <= kClamp.
template <typename T>
inline T exp_neg(T a) {
  using Tr = SoftplusTraits<T>;
  const T n = (a * Tr::kLog2e + Tr::kRound) - Tr::kRound;  // round(a / ln2), an integer in [0, 1155]
  const T r = (n * Tr::kLn2Hi - a) + n * Tr::kLn2Lo;        // exp(-a) = 2^-n * exp(r)
  const T p = Horner<T, ExpCoefficient, 0, Tr::kExpDegree>::eval(r);  // exp(r), Taylor
  // Two half-size powers of two stay normal; only the second product can round (subnormal result).
  const T half = (n * T(0.5) + Tr::kRound) - Tr::kRound;
  return (p * pow2_neg(half)) * pow2_neg(n - half);
}

// log1p(u) for 0 <= u <= 1.
template <typename T>
inline T log1p_unit(T u) {
  constexpr int kLast = sizeof(T) == sizeof(float) ? Log1pOverUCoefficient::kFloatTerms - 1
                                                   : Log1pOverUCoefficient::kDoubleTerms - 1;
  return u * Horner<T, Log1pOverUCoefficient, 0, kLast>::eval(u);
}

// log1p(exp(-a)) for a >= 0, including +inf; NaN propagates (the clamp compares false for NaN and
// every later operation keeps it).
template <typename T>
inline T softplus_tail(T a) {
  const T clamped = a > SoftplusTraits<T>::kClamp ? SoftplusTraits<T>::kClamp : a;
  return log1p_unit(exp_neg(clamped));
}

}  // namespace gail_robot
