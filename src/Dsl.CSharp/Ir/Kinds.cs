namespace Duality.Ir;

/// <summary>Elementwise nonlinearities; <c>Identity</c> means none.</summary>
public enum ActivationKind
{
    /// <summary>f(x) = x.</summary>
    Identity,

    /// <summary>f(x) = 1 / (1 + e^-x).</summary>
    Sigmoid,

    /// <summary>f(x) = x sigmoid(x).</summary>
    SiLU,

    /// <summary>f(x) = x Phi(x) = x (1 + erf(x / sqrt 2)) / 2, the exact form (not the tanh approximation).</summary>
    GELU,

    /// <summary>f(x) = tanh(x).</summary>
    Tanh,

    /// <summary>f(x) = max(0, x).</summary>
    ReLU,

    /// <summary>f(x) = elu(x) + 1: x + 1 for x &gt; 0, e^x otherwise; positive, a linear attention's usual feature map.</summary>
    EluPlusOne,

    /// <summary>f(x) = log(1 + e^x), computed as max(x, 0) + log(1 + e^-|x|): positive, Mamba-2's step size.</summary>
    Softplus,

    /// <summary>
    /// f(x) = sqrt(1 - e^(2x)): the input gain of a state whose log-decay is x &lt;= 0 (Griffin's sqrt(1 - a_t^2) for
    /// a_t = e^x), computed from e^(2x) - 1 to full precision; NaN for x &gt; 0. Compiled with gradients, its slope
    /// -e^(2x) / sqrt(1 - e^(2x)) (infinite at x = 0) is bounded at 1000 in magnitude, as Griffin's implementation bounds it.
    /// </summary>
    DecayNormaliser,

    /// <summary>
    /// f(x) = log sigmoid(x) = -softplus(-x), computed as min(x, 0) - log(1 + e^-|x|): a log-decay in (-inf, 0) from
    /// any real (gated linear attention's log alpha, mLSTM's log forget gate); f'(x) = sigmoid(-x).
    /// </summary>
    LogSigmoid,

    /// <summary>
    /// f(x) = log softplus(x) = log log(1 + e^x): Mamba-2's log step size. Below x = -20 it is x + log(log(1 + u) / u)
    /// with u = e^x (softplus itself underflows below x = -745; the correction tends to -u/2), elsewhere the logarithm of
    /// the softplus; f'(x) = sigmoid(x) / softplus(x), which tends to 1 far below 0. Relative precision everywhere but
    /// near its root log(e - 1), where the value's own condition number |x f'(x) / f(x)| grows without bound.
    /// </summary>
    LogSoftplus,
    /// <summary>f(x) = e^x: a gate given as a logarithm (GLA's and mLSTM's input gate e^(g_t)); overflows beyond x = 709.</summary>
    Exp,
}

/// <summary>
/// How a recurrence's decay branch d gives its eigenvalue: lambda_t = sigmoid(d_t), or lambda_t = e^(d_t) (the
/// branch is log lambda_t, as Mamba-2, Griffin's RG-LRU and gated linear attention write their decays).
/// </summary>
public enum DecayForm
{
    /// <summary>lambda_t = sigmoid(d_t).</summary>
    Sigmoid,

    /// <summary>lambda_t = e^(d_t): the branch is the log-decay.</summary>
    Logarithm,
}

/// <summary>A recurrence's state: real, or complex (kept as real and imaginary parts).</summary>
public enum StateKind
{
    /// <summary>h [Width], lambda [Width].</summary>
    Real,

    /// <summary>h and lambda [Width, 2], [re, im] per neuron; h_t = lambda h_{t-1} + u_t in complex arithmetic, u_t fed to the real part.</summary>
    Complex,
}

/// <summary>What a complex recurrence emits: its real part [width], or [re; im] [2 width].</summary>
public enum ComplexReadout
{
    /// <summary>y_t = Re h_t, [Width] features.</summary>
    RealPart,

    /// <summary>y_t = [Re h_t; Im h_t], [2 Width] features.</summary>
    RealAndImaginary,
}

/// <summary>Linear (no softmax, no normalisation) or scaled dot-product softmax attention.</summary>
public enum AttentionKernel
{
    /// <summary>y_t = sum_s w(t, s) (phi(k_s) . phi(q_t)) v_s: no softmax, no normalisation; the causal form is a recurrence.</summary>
    Linear,

    /// <summary>y_t = sum_s softmax_s(k_s . q_t / sqrt(KeyWidth)) v_s.</summary>
    Softmax,
}
