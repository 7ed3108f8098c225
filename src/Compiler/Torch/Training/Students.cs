using Duality.Builders;
using Duality.Ir;
using Duality.Passes;
using Duality.Torch;
using DoubleTensor = Duality.Ir.DoubleTensor;
using TorchSharp;
using static TorchSharp.torch;

namespace Duality.Training;

/// <summary>The models compared on the tasks.</summary>
public static class Students
{
    /// <summary>
    /// The gated RNN layer of the paper: u = (A_g x + a) * (A_x x + b), h_t = lambda h_{t-1} + u_t (trainable,
    /// lambda ~ U(0, 1)), z = (B_g h) * (B_x h), y = D z, with <paramref name="neurons"/> recurrent and
    /// <paramref name="outputNeurons"/> output neurons.
    /// </summary>
    public static Graph GatedRnn(int input, int neurons, int outputNeurons, int output, int seed = 0)
    {
        var random = new Random(seed);
        var lambda = DoubleTensor.Vector(Enumerable.Range(0, neurons).Select(_ => random.NextDouble()).ToArray());
        var graph = Model.Input("x", input)
            .Gate(value: v => v.Projection(neurons, name: "a_g"), gate: g => g.Projection(neurons, name: "a_x"), name: "input_gate")
            .LinearRecurrence(lambda: lambda, name: "memory")
            .Gate(value: v => v.Projection(outputNeurons, bias: false, name: "b_g"), gate: g => g.Projection(outputNeurons, bias: false, name: "b_x"),
                name: "output_gate")
            .Projection(output, bias: false, name: "readout")
            .Build();
        return InitializeWeights.Run(graph, seed);
    }

    /// <summary>One causal linear attention head with an output projection.</summary>
    public static Graph LinearAttention(int input, int output, int seed = 0) =>
        InitializeWeights.Run(Model.Input("x", input).Attention(1, input, input, outFeatures: output, name: "attention").Build(), seed);

    /// TorchSharp's LSTM with <paramref name="hidden"/> units followed by a linear readout to <paramref name="output"/>
    /// features; x: [batch, time, <paramref name="input"/>] to [batch, time, <paramref name="output"/>]. A baseline, not a graph.
    public static nn.Module<Tensor, Tensor> Lstm(int input, int hidden, int output) => new RecurrentBaseline("lstm", input, hidden, output);

    /// TorchSharp's GRU with <paramref name="hidden"/> units followed by a linear readout to <paramref name="output"/>
    /// features; x: [batch, time, <paramref name="input"/>] to [batch, time, <paramref name="output"/>]. A baseline, not a graph.
    public static nn.Module<Tensor, Tensor> Gru(int input, int hidden, int output) => new RecurrentBaseline("gru", input, hidden, output);

    /// <summary>TorchSharp's own LSTM or GRU followed by a linear readout; x: [batch, time, input].</summary>
    private sealed class RecurrentBaseline : nn.Module<Tensor, Tensor>
    {
        private readonly nn.Module? lstm, gru;
        private readonly TorchSharp.Modules.Linear readout;

        public RecurrentBaseline(string kind, int input, int hidden, int output) : base(kind)
        {
            if (kind == "lstm") lstm = nn.LSTM(input, hidden, batchFirst: true);
            else gru = nn.GRU(input, hidden, batchFirst: true);
            readout = nn.Linear(hidden, output);
            RegisterComponents();
        }

        public override Tensor forward(Tensor x)
        {
            var states = lstm is TorchSharp.Modules.LSTM l ? l.forward(x).Item1 : ((TorchSharp.Modules.GRU)gru!).forward(x).Item1;
            return readout.forward(states);
        }
    }
}
