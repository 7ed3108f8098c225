using Duality.Ir;

namespace Duality.Reference;

/// <summary>The activations in plain float64 arithmetic.</summary>
internal static class ScalarFunctions
{
    public static double Apply(ActivationKind kind, double x) => kind switch
    {
        ActivationKind.Identity => x,
        ActivationKind.Sigmoid => Sigmoid(x),
        ActivationKind.SiLU => x * Sigmoid(x),
        ActivationKind.GELU => 0.5 * x * (1 + Erf(x / Math.Sqrt(2))),
        ActivationKind.Tanh => Math.Tanh(x),
        ActivationKind.ReLU => Math.Max(x, 0),
        ActivationKind.EluPlusOne => x > 0 ? x + 1 : Math.Exp(x),
        ActivationKind.Softplus => Softplus(x),
        ActivationKind.DecayNormaliser => Math.Sqrt(-ExpMinusOne(2 * x)),
        ActivationKind.LogSigmoid => Math.Min(x, 0) - LogOnePlus(Math.Exp(-Math.Abs(x))),
        ActivationKind.LogSoftplus => LogSoftplus(x),
        ActivationKind.Exp => Math.Exp(x),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "bug in the reference evaluator: activation without a rule"),
    };

    public static double Sigmoid(double x) => 1 / (1 + Math.Exp(-x));

    /// <summary>log(1 + e^x) = max(x, 0) + log(1 + e^-|x|): no overflow, and exact where e^x is below rounding.</summary>
    public static double Softplus(double x) => Math.Max(x, 0) + LogOnePlus(Math.Exp(-Math.Abs(x)));

    /// <summary>
    /// log softplus(x): x + log(log(1 + u) / u) with u = e^x below x = -20, where softplus(x) = u (1 - u/2 + ...) would
    /// lose x to underflow (the ratio rounds to 1 once u is below rounding, and is 1 in the limit u = 0); log softplus(x)
    /// above.
    /// </summary>
    public static double LogSoftplus(double x)
    {
        if (x >= LogSoftplusSeriesBelow) return Math.Log(Softplus(x));
        var u = Math.Exp(x);
        return u == 0 ? x : x + Math.Log(LogOnePlus(u) / u);
    }

    /// <summary>Where log softplus(x) changes form: e^-20 = 2e-9, so both forms are exact there.</summary>
    public const double LogSoftplusSeriesBelow = -20;

    /// <summary>e^x - 1 to full precision: (u - 1) x / log u with u = e^x rounded (Kahan), x itself where u rounds to 1.</summary>
    public static double ExpMinusOne(double x)
    {
        var u = Math.Exp(x);
        if (u == 1) return x;
        var um1 = u - 1;
        return um1 == -1 || double.IsInfinity(u) ? um1 : um1 * x / Math.Log(u);
    }

    /// <summary>log(1 + u) for u &gt;= 0 to full precision: log(w) u / (w - 1) with w = 1 + u rounded (Goldberg), u itself where w rounds to 1.</summary>
    private static double LogOnePlus(double u)
    {
        var w = 1 + u;
        return w == 1 ? u : Math.Log(w) * u / (w - 1);
    }

    /// <summary>
    /// erf x = 2/sqrt(pi) e^(-x^2) sum_n 2^n x^(2n+1) / (1 3 5 ... (2n+1)): every term is positive,
    /// so the sum loses no precision; beyond |x| = 6, erf is +-1 to double precision.
    /// </summary>
    public static double Erf(double x)
    {
        if (double.IsNaN(x)) return double.NaN;
        if (Math.Abs(x) >= 6) return Math.Sign(x);
        double term = x, sum = x, twoXSquared = 2 * x * x;
        for (int n = 1; n < 500 && Math.Abs(term) > 1e-17 * Math.Abs(sum); n++)
        {
            term *= twoXSquared / (2 * n + 1);
            sum += term;
        }
        return 2 / Math.Sqrt(Math.PI) * Math.Exp(-x * x) * sum;
    }
}
