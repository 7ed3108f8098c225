using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Duality.Ir;

namespace Duality.Kernels;

/// <summary>
/// A gate feeding a real diagonal recurrence, fused: h_t = lambda_t * h_{t-1} + (value_t + a) [f2(gate2_t)] * f(s (gate_t + c)),
/// never materialising f(gate) or the product; a and c are optional biases ([N] or null) of the projections
/// that produced value and gate, s a constant factor (a Scale folded into the gate), f2(gate2) an optional gate on the
/// value (<see cref="ValueGate{T}"/>). lambda_t is fixed per channel
/// ([N]) or comes from a decay branch d ([B, T, N], or [B, T, 1] shared by every channel) as sigmoid(r d_t) or
/// e^(r d_t) (<see cref="Decay{T}"/>). value, gate, h: [B, T, N] contiguous (h may be value itself); h0: [N] or null.
/// Work is split as the scans split theirs (<see cref="ScanPartition"/>): (batch row, block of
/// channels) pieces run in parallel, each walking through time, blocks as wide as the number of pieces allows,
/// so each step of a piece reads whole pages (narrow blocks revisit every page, paying a TLB miss each time).
/// </summary>
internal static unsafe class GatedScan
{
    /// <summary>The gate functions the fused pass and its reverse pass compute.</summary>
    public static bool Supports(ActivationKind kind) =>
        kind is ActivationKind.Identity or ActivationKind.Sigmoid or ActivationKind.Tanh or ActivationKind.SiLU or ActivationKind.ReLU
            or ActivationKind.DecayNormaliser;

    public readonly record struct Shape(int Batch, int Time, int Width);

    /// <summary>Optional per-channel biases of the value and the gate, added before the product.</summary>
    public readonly struct Biases<T>(T* value, T* gate) where T : unmanaged
    {
        public T* Value { get; } = value;

        public T* Gate { get; } = gate;
    }

    /// <summary>A gate on the value itself, value_t * f2(gate2_t) (a Gate whose only reader is the pass's gate), or none.</summary>
    public readonly struct ValueGate<T>(T* gate, ActivationKind kind) where T : unmanaged
    {
        public T* Gate { get; } = gate;

        public ActivationKind Kind { get; } = kind;
    }

    /// <summary>
    /// lambda_t: a fixed lambda per channel (<see cref="Fixed"/>), or from a decay branch's values per step
    /// (<see cref="PerStep"/>): sigmoid(r d) or, when exponential, e^(r d), with r a constant factor (a Scale folded in).
    /// </summary>
    public readonly struct Decay<T> where T : unmanaged, IFloatingPointIeee754<T>
    {
        private Decay(T* lambda, T* steps, bool shared, T factor, bool exponential)
        {
            Lambda = lambda;
            Steps = steps;
            (Shared, Factor, Exponential) = (shared, factor, exponential);
        }

        public static Decay<T> Fixed(T* lambda) => new(lambda, null, false, T.One, false);

        /// <summary>lambda_t = sigmoid(factor d_t), or e^(factor d_t) when exponential; d: [B, T, N], or [B, T, 1] when shared by every channel.</summary>
        public static Decay<T> PerStep(T* steps, bool shared, T factor, bool exponential) => new(null, steps, shared, factor, exponential);

        public T* Lambda { get; }

        public T* Steps { get; }

        public bool Shared { get; }

        public T Factor { get; }

        public bool Exponential { get; }

        /// <summary>sigmoid(r d) or e^(r d), for kernels that keep r and the form in locals.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector<T> Factorised(Vector<T> d, Vector<T> factor, bool exponential) =>
            exponential ? VectorExp.Exp(d * factor) : Sigmoid(d * factor);
    }

    public static void Run<T>(T* value, ValueGate<T> valueGate, T* gate, T gateFactor, Decay<T> decay, T* h0, T* h, Biases<T> biases,
        ActivationKind kind, Shape shape) where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (shape.Time > 0)
            ScanPartition.For(shape.Batch, shape.Width).Run(item =>
                RunPiece(value, valueGate, gate, gateFactor, decay, h0, h, biases, kind, shape, item.Batch, item.Start, item.Count));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RunPiece<T>(T* value, ValueGate<T> valueGate, T* gate, T gateFactor, Decay<T> decay, T* h0, T* h, Biases<T> biases,
        ActivationKind kind, Shape shape, int b, int start, int width) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var (valueGates, valueKind) = ((nint)valueGate.Gate, valueGate.Kind);
        T* l = decay.Lambda is null ? null : decay.Lambda + start;
        T* a = biases.Value is null ? null : biases.Value + start, c = biases.Gate is null ? null : biases.Gate + start;
        // the decay's constants in locals (the struct is not kept in registers)
        var (decayFactor, exponential, sharedDecay) = (new Vector<T>(decay.Factor), decay.Exponential, decay.Shared);
        for (int t = 0; t < shape.Time; t++)
        {
            long row = (long)b * shape.Time + t, offset = row * shape.Width + start;
            T* v = value + offset, g = gate + offset, y = h + offset, w = valueGates == 0 ? null : (T*)valueGates + offset;
            T* d = l is not null ? null : sharedDecay ? decay.Steps + row : decay.Steps + offset;
            var shared = d is not null && sharedDecay ? Decay<T>.Factorised(new Vector<T>(d[0]), decayFactor, exponential) : default;
            // h_{t-1} is the row just written (still in cache); before the first step, h0 or zero
            T* previous = t > 0 ? y - shape.Width : h0 is null ? null : h0 + start;
            var step = new StepRows<T>(v, g, w, a, c, l, d, previous, y, sharedDecay ? shared[0] : T.Zero, gateFactor, decay.Factor, sharedDecay,
                exponential, valueKind);
            int i = Activations.Visit<int, StepOfGate<T>>(kind, new(step, width));
            for (; i < width; i++)
            {
                T input = v[i] + (a is null ? T.Zero : a[i]), gating = g[i] + (c is null ? T.Zero : c[i]);
                if (w is not null) input *= Activate(valueKind, new Vector<T>(w[i]))[0];
                T product = input * Activate(kind, new Vector<T>(gating * gateFactor))[0];
                T lambda = l is not null ? l[i] : sharedDecay ? shared[0] : Decay<T>.Factorised(new Vector<T>(d[i]), decayFactor, exponential)[0];
                y[i] = previous is null ? product : lambda * previous[i] + product;
            }
        }
    }

    /// <summary>One step's rows, as <see cref="RunPiece"/> reads them (null for what it does not have).</summary>
    private readonly struct StepRows<T>(T* value, T* gate, T* valueGate, T* valueBias, T* gateBias, T* lambda, T* decays, T* previous,
        T* output, T shared, T gateFactor, T decayFactor, bool sharedDecay, bool exponential, ActivationKind valueKind)
        where T : unmanaged
    {
        public readonly T* Value = value, Gate = gate, ValueGate = valueGate, ValueBias = valueBias, GateBias = gateBias, Lambda = lambda,
            Decays = decays, Previous = previous, Output = output;
        public readonly T Shared = shared, GateFactor = gateFactor, DecayFactor = decayFactor;
        public readonly bool SharedDecay = sharedDecay, Exponential = exponential;
        public readonly ActivationKind ValueKind = valueKind;
    }

    /// <summary>The step's gate function f as a type, then the value's own f2 (<see cref="StepOfBoth{T, TGate}"/>).</summary>
    private readonly struct StepOfGate<T>(StepRows<T> step, int width) : IActivationVisitor<int> where T : unmanaged, IFloatingPointIeee754<T>
    {
        public int Visit<TGate>() where TGate : struct, IActivation =>
            Activations.Visit<int, StepOfBoth<T, TGate>>(step.ValueKind, new(step, width));
    }

    /// <summary>The step's whole vectors: 512 bits wide where those run at full rate, then Vector&lt;T&gt;; returns where they end.</summary>
    private readonly struct StepOfBoth<T, TGate>(StepRows<T> step, int width) : IActivationVisitor<int>
        where T : unmanaged, IFloatingPointIeee754<T> where TGate : struct, IActivation
    {
        public int Visit<TValue>() where TValue : struct, IActivation =>
            step.Exponential ? Widths<TValue, ExponentialDecay>() : Widths<TValue, SigmoidDecay>();

        private int Widths<TValue, TDecay>() where TValue : struct, IActivation where TDecay : struct, IDecayForm
        {
            int i = WideLanes<T>.Faster ? Step<T, Vector512<T>, WideLanes<T>, TGate, TValue, TDecay>(step, 0, width) : 0;
            return Step<T, Vector<T>, NativeLanes<T>, TGate, TValue, TDecay>(step, i, width);
        }
    }

    /// <summary>A decay per step's form as a type: lambda = e^(r d) or sigmoid(r d).</summary>
    private interface IDecayForm
    {
        static abstract bool Exponential { get; }
    }

    private readonly struct ExponentialDecay : IDecayForm { public static bool Exponential => true; }

    private readonly struct SigmoidDecay : IDecayForm { public static bool Exponential => false; }

    /// <summary>
    /// The step's whole vectors of one width from channel <paramref name="i"/>: h = lambda h_(t-1) + (v + a) [f2(w)] f(s (g + c)),
    /// f and f2 as types; returns where they end.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int Step<T, TV, TL, TGate, TValue, TDecay>(StepRows<T> step, int i, int width)
        where T : unmanaged, IFloatingPointIeee754<T> where TV : struct where TL : ILanes<TV, T>
        where TGate : struct, IActivation where TValue : struct, IActivation where TDecay : struct, IDecayForm
    {
        var (factor, decayFactor, shared) = (TL.Broadcast(step.GateFactor), TL.Broadcast(step.DecayFactor), TL.Broadcast(step.Shared));
        for (; i <= width - TL.Count; i += TL.Count)
        {
            var input = TL.Load(step.Value + i);
            var gating = TL.Load(step.Gate + i);
            if (step.ValueBias is not null) input = TL.Add(input, TL.Load(step.ValueBias + i));
            if (step.ValueGate is not null) input = TL.Multiply(input, LanesMath.Apart<T, TV, TL, TValue>(TL.Load(step.ValueGate + i)));
            if (step.GateBias is not null) gating = TL.Add(gating, TL.Load(step.GateBias + i));
            var product = TL.Multiply(input, LanesMath.Apart<T, TV, TL, TGate>(TL.Multiply(gating, factor)));
            if (step.Previous is null) { TL.Store(product, step.Output + i); continue; }
            TV lambda;
            if (step.Lambda is not null) lambda = TL.Load(step.Lambda + i);
            else if (step.SharedDecay) lambda = shared;
            else
            {
                var scaled = TL.Multiply(TL.Load(step.Decays + i), decayFactor);
                lambda = TDecay.Exponential ? LanesMath.ExpApart<T, TV, TL>(scaled) : LanesMath.Apart<T, TV, TL, Activations.Sigmoid>(scaled);
            }
            TL.Store(TL.MultiplyAdd(lambda, TL.Load(step.Previous + i), product), step.Output + i);
        }
        return i;
    }

    /// <summary>
    /// The reverse pass, with the gate's inputs saved by the forward pass: a_t = dh_t + lambda_{t+1} a_{t+1},
    /// dvalue_t = a_t f(s gate_t) [f2(gate2_t)], dgate2_t = a_t f(s gate_t) value_t f2'(gate2_t) with a value gate,
    /// dgate_t = a_t value_t [f2(gate2_t)] f'(s gate_t) s, and, for a fixed lambda, the eigenvalue
    /// gradient's rows lambdaRows[b] = sum_t a_t h_{t-1} (null when lambda is not trained); for a decay per step and
    /// channel (not shared), dDecay_t = a_t h_{t-1} lambda'(d_t) r with lambda' = lambda (1 - lambda) for sigmoid(r d),
    /// lambda for e^(r d). dh is [B, T, N], or [B, T] for a gradient equal across channels (channelBroadcast).
    /// </summary>
    public static void RunBackward<T>(T* dh, bool channelBroadcast, T* value, ValueGate<T> valueGate, T* gate, T gateFactor, Decay<T> decay,
        T* h0, T* h, T* dValue, T* dValueGate, T* dGate, T* lambdaRows, T* dDecay, ActivationKind kind, Shape shape)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (decay.Shared) throw new ArgumentException("the reverse pass takes a decay per channel", nameof(decay));
        if (shape.Time > 0)
            ScanPartition.For(shape.Batch, shape.Width).Run(item =>
                BackwardPiece(dh, channelBroadcast, value, valueGate, gate, gateFactor, decay, h0, h, dValue, dValueGate, dGate, lambdaRows, dDecay,
                    kind, shape, item.Batch, item.Start, item.Count));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void BackwardPiece<T>(T* dh, bool channelBroadcast, T* value, ValueGate<T> valueGate, T* gate, T gateFactor, Decay<T> decay,
        T* h0, T* h, T* dValue, T* dValueGate, T* dGate, T* lambdaRows, T* dDecay, ActivationKind kind, Shape shape, int b, int start, int width)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var (valueGates, valueKind) = ((nint)valueGate.Gate, valueGate.Kind);
        // adjoint: a_{t+1}; following: lambda_{t+1} (zero past the end, where the adjoint is zero too)
        T* adjoint = stackalloc T[width], products = stackalloc T[width], following = stackalloc T[width];
        new Span<T>(adjoint, width).Clear();
        new Span<T>(products, width).Clear();
        new Span<T>(following, width).Clear();
        T* l = decay.Lambda is null ? following : decay.Lambda + start;
        var (factor, decayFactor, exponential) = (new Vector<T>(gateFactor), new Vector<T>(decay.Factor), decay.Exponential);
        for (int t = shape.Time - 1; t >= 0; t--)
        {
            long row = (long)b * shape.Time + t, offset = row * shape.Width + start;
            T* v = value + offset, g = gate + offset, dv = dValue + offset, dg = dGate + offset, d = dh + (channelBroadcast ? row : offset);
            T* w = valueGates == 0 ? null : (T*)valueGates + offset, dw = w is null ? null : dValueGate + offset;
            T* steps = decay.Steps is null ? null : decay.Steps + offset, dd = dDecay is null ? null : dDecay + offset;
            T* previous = t > 0 ? h + offset - shape.Width : h0 is null ? null : h0 + start;
            int i = 0;
            for (; i <= width - Vector<T>.Count; i += Vector<T>.Count)
            {
                var incoming = channelBroadcast ? new Vector<T>(d[0]) : Vector.Load(d + i);
                var a = VectorFused.MultiplyAdd(Vector.Load(l + i), Vector.Load(adjoint + i), incoming);
                Vector.Store(a, adjoint + i);
                var activated = ActivateWithSlope(kind, Vector.Load(g + i) * factor, out var slope);
                var input = Vector.Load(v + i);
                if (w is not null)
                {
                    // value f2(w): its gate's gradient a f(s g) value f2'(w), the value's a f(s g) f2(w)
                    var gated = ActivateWithSlope(valueKind, Vector.Load(w + i), out var valueSlope);
                    Vector.Store(a * activated * input * valueSlope, dw + i);
                    Vector.Store(a * activated * gated, dv + i);
                    input *= gated;
                }
                else Vector.Store(a * activated, dv + i);
                Vector.Store(a * input * slope * factor, dg + i);
                if (steps is not null)
                {
                    var lambda = Decay<T>.Factorised(Vector.Load(steps + i), decayFactor, exponential);
                    Vector.Store(lambda, following + i);
                    var lambdaSlope = exponential ? lambda : lambda * (Vector<T>.One - lambda);
                    Vector.Store(previous is null ? Vector<T>.Zero : a * Vector.Load(previous + i) * lambdaSlope * decayFactor, dd + i);
                }
                else if (previous is not null) Vector.Store(VectorFused.MultiplyAdd(a, Vector.Load(previous + i), Vector.Load(products + i)), products + i);
            }
            for (; i < width; i++)
            {
                T a = (channelBroadcast ? d[0] : d[i]) + l[i] * adjoint[i];
                adjoint[i] = a;
                var activated = ActivateWithSlope(kind, new Vector<T>(g[i] * gateFactor), out var slope);
                T input = v[i];
                if (w is not null)
                {
                    var gated = ActivateWithSlope(valueKind, new Vector<T>(w[i]), out var valueSlope);
                    dw[i] = a * activated[0] * input * valueSlope[0];
                    dv[i] = a * activated[0] * gated[0];
                    input *= gated[0];
                }
                else dv[i] = a * activated[0];
                dg[i] = a * input * slope[0] * gateFactor;
                if (steps is not null)
                {
                    T lambda = Decay<T>.Factorised(new Vector<T>(steps[i]), decayFactor, exponential)[0];
                    following[i] = lambda;
                    dd[i] = previous is null ? T.Zero : a * previous[i] * (exponential ? lambda : lambda * (T.One - lambda)) * decay.Factor;
                }
                else if (previous is not null) products[i] += a * previous[i];
            }
        }
        if (lambdaRows is not null) new Span<T>(products, width).CopyTo(new Span<T>(lambdaRows + (long)b * shape.Width + start, width));
    }

    /// <summary>f(x) and f'(x).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector<T> ActivateWithSlope<T>(ActivationKind kind, Vector<T> x, out Vector<T> slope) where T : unmanaged, IFloatingPointIeee754<T>
    {
        switch (kind)
        {
            case ActivationKind.Sigmoid:
            {
                var s = Sigmoid(x);
                slope = s * (Vector<T>.One - s);
                return s;
            }
            case ActivationKind.Tanh:
            {
                // with e = e^(-2|x|): tanh |x| = (1 - e) / (1 + e), its numerator as -(e^(-2|x|) - 1) to full relative
                // precision near 0 (where 2 sigmoid(2x) - 1 cancels to the rounding of 1), and 1 - tanh^2 = 4 e / (1 + e)^2
                // to full relative precision far out (where 1 - tanh^2 cancels): float32 gate gradients had 14x the
                // composite form's error
                var twice = -(Vector.Abs(x) + Vector.Abs(x));
                var e = VectorExp.Exp(twice);
                var sum = Vector<T>.One + e;
                var magnitude = -VectorExp.ExpMinusOne(twice) / sum;
                slope = Vector.Create(T.CreateTruncating(4)) * e / (sum * sum);
                return Vector.ConditionalSelect(Vector.LessThan(x, Vector<T>.Zero), -magnitude, magnitude);
            }
            case ActivationKind.SiLU:
            {
                var s = Sigmoid(x);
                slope = s * VectorFused.MultiplyAdd(x, Vector<T>.One - s, Vector<T>.One);
                return x * s;
            }
            case ActivationKind.DecayNormaliser:
            {
                // its slope -e^(2x) / sqrt(1 - e^(2x)) bounded in magnitude as the module bounds it
                var value = DecayNormaliser(x);
                slope = -VectorExp.Exp(x + x) / Vector.Max(value, new Vector<T>(T.One / T.CreateTruncating(Duality.Torch.TensorValues.DecayNormaliserSlopeBound)));
                return value;
            }
            case ActivationKind.ReLU:
                slope = Vector.ConditionalSelect(Vector.GreaterThan(x, Vector<T>.Zero), Vector<T>.One, Vector<T>.Zero);
                return Vector.Max(x, Vector<T>.Zero);
            default:
                slope = Vector<T>.One;
                return x;
        }
    }

    /// <summary>f(x); the decay normaliser without its slope (an exponential and a division the forward pass does not need).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<T> Activate<T>(ActivationKind kind, Vector<T> x) where T : unmanaged, IFloatingPointIeee754<T> =>
        kind == ActivationKind.DecayNormaliser ? DecayNormaliser(x) : ActivateWithSlope(kind, x, out _);

    /// <summary>sqrt(1 - e^(2x)) = sqrt(-(e^(2x) - 1)), exact near x = 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<T> DecayNormaliser<T>(Vector<T> x) where T : unmanaged, IFloatingPointIeee754<T> =>
        Vector.SquareRoot(-VectorExp.ExpMinusOne(x + x));

    /// <summary>
    /// 1 / (1 + e^-x); 0 below -88 (float) or -708 (double), where e^-x saturates (so that x sigmoid(x) is -0 there, not
    /// x times the saturated sigmoid, and NaN at -inf as libtorch's).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<T> Sigmoid<T>(Vector<T> x) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var bound = new Vector<T>(T.CreateTruncating(typeof(T) == typeof(float) ? -88.0 : -708.0));
        return Vector.ConditionalSelect(Vector.LessThan(x, bound), Vector<T>.Zero, Vector<T>.One / (Vector<T>.One + VectorExp.Exp(-x)));
    }
}
