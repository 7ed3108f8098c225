namespace Duality.Ir;

/// <summary>
/// Elementwise nonlinearities; <c>Identity</c> means none. Softplus is log(1 + e^x). DecayNormaliser is
/// sqrt(1 - e^(2x)), the input gain of a state whose log-decay is x &lt;= 0 (Griffin's sqrt(1 - a_t^2) for a_t = e^x),
/// NaN for x &gt; 0.
/// </summary>
public enum ActivationKind { Identity, Sigmoid, SiLU, GELU, Tanh, ReLU, EluPlusOne, Softplus, DecayNormaliser }

/// <summary>
/// How a recurrence's decay branch d gives its eigenvalue: lambda_t = sigmoid(d_t), or lambda_t = e^(d_t) (the
/// branch is log lambda_t, as Mamba-2, Griffin's RG-LRU and gated linear attention write their decays).
/// </summary>
public enum DecayForm { Sigmoid, Logarithm }

/// <summary>A recurrence's state: real, or complex (kept as real and imaginary parts).</summary>
public enum StateKind { Real, Complex }

/// <summary>What a complex recurrence emits: its real part [width], or [re; im] [2 width].</summary>
public enum ComplexReadout { RealPart, RealAndImaginary }

/// <summary>Linear (no softmax, no normalisation) or scaled dot-product softmax attention.</summary>
public enum AttentionKernel { Linear, Softmax }
