using Duality.Ir;

namespace Duality.Structure;

/// <summary>
/// The causal linear attention a <see cref="GatedLayer"/> computes, read from its weights:
///
///   y_t = sum_s w(t,s) sum_(m,n) D[:,m] B_g[m,n] (a_n . x_s)(c_n . x_s)(r_m . x_t)
///
/// when neurons with lambda = 0 carry a query (one input factor is a constant), all other neurons share one
/// lambda = gamma e^(i theta) (or an input-dependent decay) and store bias-free products, and every output neuron
/// multiplies memory neurons by query neurons. Each (output neuron, memory neuron) pair is a head with key and value
/// width 1; pairs sharing a key, a query and a decay become one head (values stacked), and heads sharing values,
/// output columns and decay merge their keys and queries. A weight or eigenvalue is zero only when it is exactly zero:
/// the reading does not depend on the weights' scale, and never drops a weight merely small beside its matrix's largest
/// (it may multiply a neuron large enough to matter). Vectors of one head are merged when equal up to rounding
/// (<see cref="VectorClasses.Rounding"/>, relative).
/// </summary>
internal static class AttentionForm
{
    /// <summary>
    /// A head of key and value width 1 for one (output neuron, memory neuron) pair, vectors normalised, its output column
    /// Weight times the output neuron's Column (shared by its pairs, so formed only when needed); Decay: the class of
    /// the memory neuron's decay row (-1 for a fixed eigenvalue).
    /// </summary>
    private sealed record PairHead(double[] Value, double[] Key, double[] Query, double[] Column, double Weight, int Decay)
    {
        public double[] Out() => Column.Select(w => w * Weight).ToArray();

        public void AddTo(double[] sum)
        {
            for (int o = 0; o < sum.Length; o++) sum[o] += Weight * Column[o];
        }

        public bool Reads => Weight != 0 && Column.Any(w => w != 0);
    }


    /// <summary>The attention the layer computes, or why there is none.</summary>
    internal static (Attention? Attention, Mismatch Why) Of(GatedLayer layer)
    {
        if (NonFinite(layer) is { } node)
            return (null, new($"{node} holds a NaN or infinite weight", "fix the weights (a diverged training run?) before raising"));
        int n = layer.Neurons, d = layer.InputValue.InFeatures, decayed = layer.Decay?.Memory.Width ?? 0;
        var lambdas = layer.Eigenvalues();
        var isQuery = lambdas.Select(l => l.Re == 0 && l.Im == 0).ToArray();
        var memory = Enumerable.Range(0, n).Where(i => !isQuery[i]).ToArray();
        if (memory.Length == 0) return (null, new("no neuron has a non-zero eigenvalue, so nothing is remembered", "this layer is feed-forward"));
        if (decayed > 0 && memory.Any(i => i >= decayed))
            return (null, new("neurons of fixed non-zero eigenvalue sit beside neurons with an input-dependent decay; one attention has one kind of decay",
                "give the neurons after the decayed ones eigenvalue 0 (queries)"));
        var gamma = lambdas[memory[0]];
        var (decayRows, decayOf) = DecayClasses(layer, n);
        // memory neurons of different real eigenvalues in (0, 1]: one decay per head (each head's neurons share theirs)
        List<double>? headDecays = null;
        if (memory.Any(i => lambdas[i] != gamma))
        {
            if (decayed > 0 || memory.Any(i => lambdas[i].Im != 0 || !(lambdas[i].Re > 0 && lambdas[i].Re <= 1)))
                return (null, new("memory neurons have different eigenvalues that are not all real and in (0, 1]; one attention has one decay, or one real decay per head",
                    "split the layer by eigenvalue"));
            headDecays = memory.Select(i => lambdas[i].Re).Distinct().ToList();
            foreach (var i in memory) decayOf[i] = headDecays.IndexOf(lambdas[i].Re);
        }
        var magnitude = Math.Sqrt(gamma.Re * gamma.Re + gamma.Im * gamma.Im);
        var phase = Math.Atan2(gamma.Im, gamma.Re);
        if (magnitude > 1 + 1e-12)
            return (null, new($"the memory eigenvalue has modulus {magnitude}, larger than 1", "attention decays need |lambda| <= 1"));
        var phi = layer.Input.Activation;
        double[] Row(Projection p, int i) => Enumerable.Range(0, d).Select(c => p.Weights!.Weight[i, c]).ToArray();
        double Bias(Projection p, int i) => p.Weights!.Bias is { } b ? b[i] : 0;
        // zero relative to the largest weight (or bias) of the same projection
        bool IsZero(double[] v) => v.All(x => x == 0);
        // query neurons: h = scale * phi(row . x), a constant factor times a bias-free one (phi on the gating side only)
        var query = new (double[] Row, double Scale)[n];
        foreach (var i in Enumerable.Range(0, n).Where(i => isQuery[i]))
        {
            var (value, valueBias, key, keyBias) = (Row(layer.InputValue, i), Bias(layer.InputValue, i), Row(layer.InputKey, i), Bias(layer.InputKey, i));
            if (IsZero(value) && keyBias == 0) query[i] = (key, valueBias);
            else if (phi == ActivationKind.Identity && IsZero(key) && valueBias == 0) query[i] = (value, keyBias);
            else return (null, new($"query neuron {i} (lambda = 0) is not a constant times a bias-free projection", "give one factor only a bias and the other none"));
        }
        foreach (var i in memory)
            if (Bias(layer.InputValue, i) != 0 || Bias(layer.InputKey, i) != 0)
                return (null, new($"memory neuron {i} has a bias in its input gate; attention has no constant term", "remove the biases of memory neurons"));
        var pairs = new List<PairHead>();
        var (bg, bx, readout) = (layer.OutputValue.Weights!.Weight.Data, layer.OutputQuery.Weights!.Weight.Data, layer.Readout.Weights!.Weight);
        int outputs = layer.Readout.OutFeatures;
        bool insidePhi = phi != ActivationKind.Identity;
        // vectors are made unit vectors, their scales moved to the output column (keys and queries inside a feature map
        // keep theirs); each memory neuron's factors once, whichever output neurons read it
        var factors = new (double[] Value, double[] Key, double Scale)?[n];
        (double[] Value, double[] Key, double Scale) Factors(int k)
        {
            if (factors[k] is { } known) return known;
            var (v, sv) = Unit(Row(layer.InputValue, k));
            var (key, sk) = insidePhi ? (Row(layer.InputKey, k), 1.0) : Unit(Row(layer.InputKey, k));
            return (factors[k] = (v, key, sv * sk)).Value;
        }
        var memoryNeurons = new List<int>();
        var queryNeurons = new List<int>();
        for (int m = 0; m < layer.OutputValue.OutFeatures; m++)
        {
            // one output factor reads only memory neurons (lambda != 0), the other only query neurons (lambda = 0)
            bool gOnMemory = false, gOnQuery = false, xOnMemory = false, xOnQuery = false;
            for (int k = 0, at = m * n; k < n; k++, at++)
            {
                if (bg[at] != 0) (gOnQuery, gOnMemory) = (gOnQuery || isQuery[k], gOnMemory || !isQuery[k]);
                if (bx[at] != 0) (xOnQuery, xOnMemory) = (xOnQuery || isQuery[k], xOnMemory || !isQuery[k]);
            }
            var (memoryRow, queryRow) = !gOnQuery && !xOnMemory ? (bg, bx)
                : !gOnMemory && !xOnQuery ? (bx, bg)
                : (null, null);
            if (memoryRow is null || queryRow is null)
                return (null, new($"output neuron {m} does not multiply memory neurons by query neurons", "let one output factor read only lambda != 0 neurons and the other only lambda = 0 neurons"));
            memoryNeurons.Clear();
            queryNeurons.Clear();
            for (int k = 0, at = m * n; k < n; k++, at++)
            {
                if (memoryRow[at] != 0 && !isQuery[k]) memoryNeurons.Add(k);
                if (queryRow[at] != 0) queryNeurons.Add(k);
            }
            if (insidePhi && queryNeurons.Count > 1)
                return (null, new($"output neuron {m} mixes several query neurons under a feature map", "select one query neuron per output neuron"));
            var q = new double[d];
            var factor = 1.0;
            if (!insidePhi)
                foreach (var k in queryNeurons) for (int c = 0; c < d; c++) q[c] += queryRow[m * n + k] * query[k].Scale * query[k].Row[c];
            else if (queryNeurons.Count == 1) (q, factor) = (query[queryNeurons[0]].Row, queryRow[m * n + queryNeurons[0]] * query[queryNeurons[0]].Scale);
            var (unitQuery, queryScale) = insidePhi ? (q, 1.0) : Unit(q);
            var column = Enumerable.Range(0, outputs).Select(o => readout[o, m] * factor * queryScale).ToArray();
            foreach (var k in memoryNeurons)
            {
                var (value, key, scale) = Factors(k);
                var weight = memoryRow[m * n + k] * scale;
                pairs.Add(new PairHead(value, key, unitQuery, column, weight, decayOf[k]));
            }
        }
        var heads = Merge(pairs.Where(p => p.Reads).ToList(), swappable: phi == ActivationKind.Identity);
        if (heads.Count == 0) heads = [new Head([new double[d]], [new double[d]], [new double[d]], new double[outputs, 1], decayRows.Count > 0 || headDecays is not null ? 0 : -1)];
        return (Build(layer, heads, d, outputs, phi, magnitude, phase, decayRows, headDecays), default);
    }


    /// <summary>The first node of the layer with a NaN or infinite weight, or null.</summary>
    private static string? NonFinite(GatedLayer layer)
    {
        Projection?[] projections = [layer.InputValue, layer.InputKey, layer.OutputValue, layer.OutputQuery, layer.Readout, layer.Decay?.Projection];
        foreach (var p in projections.OfType<Projection>())
            if (p.Weights is { } w && (!w.Weight.IsFinite || w.Bias is { IsFinite: false })) return p.Name;
        return layer.Recurrence.Lambda is { IsFinite: false } ? layer.Recurrence.Name : null;
    }

    /// <summary>The distinct rows [P | p] of an input-dependent decay, and per neuron the one it reads (-1: a fixed eigenvalue).</summary>
    private static (List<double[]> Rows, int[] Of) DecayClasses(GatedLayer layer, int neurons)
    {
        var of = Enumerable.Repeat(-1, neurons).ToArray();
        if (layer.Decay is not { } split) return ([], of);
        var w = split.Projection.Weights!;
        int d = split.Projection.InFeatures;
        var classes = new VectorClasses();
        for (int i = 0; i < split.Memory.Width; i++)
        {
            var row = split.Projection.OutFeatures == 1 ? 0 : i;
            of[i] = classes.Of([.. Enumerable.Range(0, d).Select(c => w.Weight[row, c]), w.Bias is { } b ? b[row] : 0]);
        }
        return (Enumerable.Range(0, classes.Count).Select(c => classes[c]).ToList(), of);
    }

    /// <summary>v / s with s the norm, signed so the largest entry is positive.</summary>
    private static (double[], double) Unit(double[] v)
    {
        var norm = Math.Sqrt(v.Sum(x => x * x));
        if (norm == 0) return (v, 0);
        var largest = v.MaxBy(Math.Abs);
        var scale = largest < 0 ? -norm : norm;
        return (v.Select(x => x / scale).ToArray(), scale);
    }

    private sealed record Head(List<double[]> Values, List<double[]> Keys, List<double[]> Queries, double[,] Out, int Decay);

    private static List<Head> Merge(List<PairHead> pairs, bool swappable)
    {
        // every vector of every pair as a class of vectors equal up to rounding, so pairs compare by number
        var classes = new VectorClasses();
        var (keyOf, valueOf, queryOf) = (new int[pairs.Count], new int[pairs.Count], new int[pairs.Count]);
        for (int i = 0; i < pairs.Count; i++)
            (keyOf[i], valueOf[i], queryOf[i]) = (classes.Of(pairs[i].Key), classes.Of(pairs[i].Value), classes.Of(pairs[i].Query));
        // how many pairs hold a class as key or value: the rarer candidate is tried first as a group's key
        var holders = new int[classes.Count];
        for (int i = 0; i < pairs.Count; i++)
        {
            holders[keyOf[i]]++;
            if (valueOf[i] != keyOf[i]) holders[valueOf[i]]++;
        }
        // pairs sharing a query: find the factor common to all (the key); the other factors are values
        // (pairs whose memory neurons decay by different rows never share a head)
        var groups = new List<(double[] Key, double[] Query, List<(int Class, double[] Value, double[] Out)> Values, int Decay)>();
        foreach (var byQuery in Enumerable.Range(0, pairs.Count).GroupBy(i => (Query: queryOf[i], pairs[i].Decay)))
        {
            var members = byQuery.ToList();
            var first = members[0];
            int[] candidates = swappable ? [keyOf[first], valueOf[first]] : [keyOf[first]];
            int? key = candidates.OrderBy(c => holders[c])
                .Select(c => (int?)c)
                .FirstOrDefault(c => members.All(i => keyOf[i] == c || (swappable && valueOf[i] == c)));
            if (key is null)
            {
                foreach (var i in members) groups.Add((pairs[i].Key, pairs[i].Query, [(valueOf[i], pairs[i].Value, pairs[i].Out())], byQuery.Key.Decay));
                continue;
            }
            var values = new List<(int Class, double[] Value, double[] Out)>();
            foreach (var i in members)
            {
                var (value, valueClass) = keyOf[i] == key ? (pairs[i].Value, valueOf[i]) : (pairs[i].Key, keyOf[i]);
                var existing = values.FindIndex(v => v.Class == valueClass);
                if (existing < 0) values.Add((valueClass, value, pairs[i].Out()));
                else pairs[i].AddTo(values[existing].Out);
            }
            values = values.OrderBy(v => string.Join(",", v.Value.Select(x => Math.Round(x, 9)))).ToList();
            var query = classes[byQuery.Key.Query];
            if (swappable)
            {
                // a head's output block is shared by its keys: fold the block's scale into the query
                var largest = values.SelectMany(v => v.Out).MaxBy(Math.Abs);
                if (largest != 0)
                {
                    values = values.Select(v => v with { Out = v.Out.Select(w => w / largest).ToArray() }).ToList();
                    query = query.Select(x => x * largest).ToArray();
                }
            }
            groups.Add((classes[key.Value], query, values, byQuery.Key.Decay));
        }
        // groups with the same values and output columns become one head with several keys
        var heads = new List<(Head Head, int[] Values)>();
        foreach (var group in groups)
        {
            var match = heads.FirstOrDefault(h => h.Head.Decay == group.Decay && h.Values.SequenceEqual(group.Values.Select(v => v.Class))
                && Enumerable.Range(0, group.Values.Count).All(j => VectorClasses.Same(Column(h.Head.Out, j), group.Values[j].Out)));
            if (match.Head is not null)
            {
                match.Head.Keys.Add(group.Key);
                match.Head.Queries.Add(group.Query);
                continue;
            }
            var outputs = group.Values[0].Out.Length;
            var block = new double[outputs, group.Values.Count];
            for (int j = 0; j < group.Values.Count; j++) for (int o = 0; o < outputs; o++) block[o, j] = group.Values[j].Out[o];
            heads.Add((new Head(group.Values.Select(v => v.Value).ToList(), [group.Key], [group.Query], block, group.Decay),
                group.Values.Select(v => v.Class).ToArray()));
        }
        return heads.Select(h => h.Head).ToList();
    }

    private static double[] Column(double[,] m, int j) => Enumerable.Range(0, m.GetLength(0)).Select(o => m[o, j]).ToArray();

    /// <summary>One attention node; heads padded with zero rows to a common key and value width.</summary>
    private static Attention Build(GatedLayer layer, List<Head> heads, int d, int outputs, ActivationKind phi, double magnitude, double phase,
        List<double[]> decayRows, List<double>? headDecays)
    {
        int count = heads.Count, dk = heads.Max(h => h.Keys.Count), dv = heads.Max(h => h.Values.Count);
        var (wq, wk, wv, wo) = (new double[count * dk, d], new double[count * dk, d], new double[count * dv, d], new double[outputs, count * dv]);
        for (int h = 0; h < count; h++)
        {
            for (int j = 0; j < heads[h].Keys.Count; j++)
                for (int c = 0; c < d; c++) (wq[h * dk + j, c], wk[h * dk + j, c]) = (heads[h].Queries[j][c], heads[h].Keys[j][c]);
            for (int i = 0; i < heads[h].Values.Count; i++)
            {
                for (int c = 0; c < d; c++) wv[h * dv + i, c] = heads[h].Values[i][c];
                for (int o = 0; o < outputs; o++) wo[o, h * dv + i] = heads[h].Out[o, i];
            }
        }
        var weights = new AttentionWeights(DoubleTensor.Matrix(wq), DoubleTensor.Matrix(wk), DoubleTensor.Matrix(wv), DoubleTensor.Matrix(wo));
        if (decayRows.Count > 0)
        {
            // each head decays by its memory neurons' row: sigmoid(w_h . x + b_h)
            var (wd, bd) = (new double[count, d], new double[count]);
            for (int h = 0; h < count; h++)
            {
                var row = decayRows[heads[h].Decay];
                for (int c = 0; c < d; c++) wd[h, c] = row[c];
                bd[h] = row[d];
            }
            return new Attention(layer.Readout.Name, layer.Source, d, count, dk, dv, Causal: true, AttentionKernel.Linear, phi,
                null, outputs, weights with { DecayWeight = DoubleTensor.Matrix(wd), DecayBias = DoubleTensor.Vector(bd) }, InputDependentDecay: true);
        }
        if (headDecays is not null)
            return new Attention(layer.Readout.Name, layer.Source, d, count, dk, dv, Causal: true, AttentionKernel.Linear, phi,
                null, outputs, weights, HeadDecays: DoubleTensor.Vector(heads.Select(h => headDecays[h.Decay]).ToArray()));
        var decay = magnitude == 1 && phase == 0 ? (double?)null : magnitude;
        var rotation = phase == 0 ? (double?)null : phase;
        return new Attention(layer.Readout.Name, layer.Source, d, count, dk, dv, Causal: true, AttentionKernel.Linear, phi,
            decay, outputs, weights, rotation);
    }
}
