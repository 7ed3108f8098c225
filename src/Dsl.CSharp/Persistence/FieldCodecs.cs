using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
using Duality.Ir;

namespace Duality.Persistence;

/// <summary>
/// How a graph file holds one field type, chosen by the field's declared type:
///   string, int, bool              JSON string, integer, true/false
///   double                         JSON number; "NaN", "Infinity", "-Infinity" as strings
///   enum                           its member's name (numbers and undefined names are refused)
///   NodeId                         the source node's name, which must be an earlier node
///   ValueList&lt;NodeId&gt;             a list of such names
///   DoubleTensor                   the name of a tensor of the file's tensor table
///   weight record                  a JSON object of its DoubleTensor fields (ProjectionWeights, ...)
///   nullable forms of these        null, or the value
/// </summary>
internal abstract class FieldCodec
{
    /// <summary>What a file must hold, for messages ("an integer").</summary>
    public abstract string Expected { get; }

    protected abstract JsonNode WritePresent(object value, GraphWriting writing, string field);

    /// <summary>The value, or null when <paramref name="json"/> is not what <see cref="Expected"/> says.</summary>
    protected abstract object? ReadPresent(JsonNode json, GraphReading reading, string field);

    public virtual JsonNode? Write(object? value, GraphWriting writing, string field) =>
        value is null ? throw writing.Cannot(field, "is null, which its type does not allow") : WritePresent(value, writing, field);

    public virtual object? Read(JsonNode? json, GraphReading reading, string field) =>
        (json is null ? null : ReadPresent(json, reading, field)) ?? throw reading.Bad(field, $"is {Show(json)}, not {Expected}");

    public static string Show(JsonNode? json)
    {
        var text = json?.ToJsonString() ?? "null";
        return text.Length <= 40 ? text : text[..37] + "...";
    }

    /// <summary>The codec for parameter <paramref name="parameter"/> of <paramref name="record"/>; a bug naming both when there is none.</summary>
    public static FieldCodec For(Type record, ParameterInfo parameter, bool weightsOnly)
    {
        var declared = parameter.ParameterType;
        var type = Nullable.GetUnderlyingType(declared) ?? declared;
        var nullable = type != declared
            || (!declared.IsValueType && new NullabilityInfoContext().Create(parameter).WriteState != NullabilityState.NotNull);
        var plain = weightsOnly ? (type == typeof(DoubleTensor) ? Tensor : null) : PlainFor(type);
        if (plain is null)
            throw new GraphFileBugException(
                $"field '{parameter.Name}' of {record.Name} has type {Describe(declared)}, which graph files cannot hold; "
                + (weightsOnly
                    ? "a weight record holds DoubleTensor or DoubleTensor? fields only"
                    : "use string, int, double, bool, an enum, NodeId, ValueList<NodeId>, DoubleTensor, a weight record of DoubleTensor fields, or a nullable form of these")
                + ", or teach Persistence/FieldCodecs.cs the new type");
        return nullable ? new OptionalCodec(plain) : plain;
    }

    private static FieldCodec? PlainFor(Type type) =>
        type == typeof(string) ? Text
        : type == typeof(int) ? Integer
        : type == typeof(double) ? Real
        : type == typeof(bool) ? Flag
        : type == typeof(NodeId) ? Source
        : type == typeof(ValueList<NodeId>) ? Sources
        : type == typeof(DoubleTensor) ? Tensor
        : type.IsEnum && type.GetCustomAttribute<FlagsAttribute>() is null ? new EnumCodec(type)
        : type is { IsClass: true, IsSealed: true } && !type.IsSubclassOf(typeof(Node)) && NodeRecords.IsRecord(type)
            ? new WeightsCodec(RecordShape.OfWeights(type))
        : null;

    private static string Describe(Type type) =>
        Nullable.GetUnderlyingType(type) is { } inner ? Describe(inner) + "?"
        : type.IsGenericType ? $"{type.Name[..type.Name.IndexOf('`')]}<{string.Join(", ", type.GetGenericArguments().Select(Describe))}>"
        : type.Name;

    private static readonly FieldCodec Text = new TextCodec(), Integer = new IntegerCodec(), Real = new RealCodec(),
        Flag = new FlagCodec(), Source = new SourceCodec(), Sources = new SourcesCodec(), Tensor = new TensorCodec();

    private static bool Is(JsonNode json, JsonValueKind kind) => json is JsonValue && json.GetValueKind() == kind;

    private sealed class TextCodec : FieldCodec
    {
        public override string Expected => "a string";
        protected override JsonNode WritePresent(object value, GraphWriting writing, string field) => JsonValue.Create((string)value);
        protected override object? ReadPresent(JsonNode json, GraphReading reading, string field) =>
            Is(json, JsonValueKind.String) ? json.GetValue<string>() : null;
    }

    private sealed class IntegerCodec : FieldCodec
    {
        public override string Expected => "an integer";
        protected override JsonNode WritePresent(object value, GraphWriting writing, string field) => JsonValue.Create((int)value);
        protected override object? ReadPresent(JsonNode json, GraphReading reading, string field) =>
            Is(json, JsonValueKind.Number) && json.AsValue().TryGetValue<int>(out var value) ? value : null;
    }

    private sealed class RealCodec : FieldCodec
    {
        private static readonly string[] namedValues = ["NaN", "Infinity", "-Infinity"];

        public override string Expected => "a number";

        protected override JsonNode WritePresent(object value, GraphWriting writing, string field) =>
            (double)value is var x && double.IsFinite(x) ? JsonValue.Create(x)
            : JsonValue.Create(double.IsNaN(x) ? "NaN" : x > 0 ? "Infinity" : "-Infinity");

        protected override object? ReadPresent(JsonNode json, GraphReading reading, string field) =>
            Is(json, JsonValueKind.Number) ? json.AsValue().TryGetValue<double>(out var x) && double.IsFinite(x) ? x : null
            : Is(json, JsonValueKind.String) && json.GetValue<string>() is var text && namedValues.Contains(text)
                ? double.Parse(text, System.Globalization.CultureInfo.InvariantCulture)
            : null;
    }

    private sealed class FlagCodec : FieldCodec
    {
        public override string Expected => "true or false";
        protected override JsonNode WritePresent(object value, GraphWriting writing, string field) => JsonValue.Create((bool)value);
        protected override object? ReadPresent(JsonNode json, GraphReading reading, string field) =>
            Is(json, JsonValueKind.True) ? true : Is(json, JsonValueKind.False) ? false : null;
    }

    private sealed class EnumCodec(Type type) : FieldCodec
    {
        private readonly string[] names = Enum.GetNames(type);

        public override string Expected => $"one of {string.Join(", ", names)}";

        protected override JsonNode WritePresent(object value, GraphWriting writing, string field) =>
            Enum.IsDefined(type, value) ? JsonValue.Create(value.ToString()!)
            : throw writing.Cannot(field, $"holds {value}, which is not a named {type.Name}");

        protected override object? ReadPresent(JsonNode json, GraphReading reading, string field) =>
            Is(json, JsonValueKind.String) && json.GetValue<string>() is var name && names.Contains(name, StringComparer.Ordinal)
                ? Enum.Parse(type, name)
                : null;
    }

    private sealed class SourceCodec : FieldCodec
    {
        public override string Expected => "the name of an earlier node";
        protected override JsonNode WritePresent(object value, GraphWriting writing, string field) => JsonValue.Create(writing.NameOf((NodeId)value));
        protected override object? ReadPresent(JsonNode json, GraphReading reading, string field) =>
            Is(json, JsonValueKind.String) ? reading.Source(json.GetValue<string>(), field) : null;
    }

    private sealed class SourcesCodec : FieldCodec
    {
        public override string Expected => "a list of names of earlier nodes";

        protected override JsonNode WritePresent(object value, GraphWriting writing, string field) =>
            new JsonArray(((ValueList<NodeId>)value).Select(id => (JsonNode)JsonValue.Create(writing.NameOf(id))).ToArray());

        protected override object? ReadPresent(JsonNode json, GraphReading reading, string field) =>
            json is JsonArray items
                ? items.Select(item => item is not null && Is(item, JsonValueKind.String)
                    ? reading.Source(item.GetValue<string>(), field)
                    : throw reading.Bad(field, $"holds {Show(item)}, not the name of an earlier node")).ToValueList()
                : null;
    }

    private sealed class TensorCodec : FieldCodec
    {
        public override string Expected => "the name of a tensor of the file";
        protected override JsonNode WritePresent(object value, GraphWriting writing, string field) => JsonValue.Create(writing.AddTensor(field, (DoubleTensor)value));
        protected override object? ReadPresent(JsonNode json, GraphReading reading, string field) =>
            Is(json, JsonValueKind.String) ? reading.Tensor(json.GetValue<string>(), field) : null;
    }

    private sealed class WeightsCodec(RecordShape shape) : FieldCodec
    {
        public override string Expected => $"an object with fields {string.Join(", ", shape.Fields.Select(f => f.Name))}";
        protected override JsonNode WritePresent(object value, GraphWriting writing, string field) => shape.Write(value, writing, field + ".");
        protected override object? ReadPresent(JsonNode json, GraphReading reading, string field) =>
            json is JsonObject fields ? shape.Read(fields, reading, field + ".") : null;
    }

    private sealed class OptionalCodec(FieldCodec inner) : FieldCodec
    {
        public override string Expected => inner.Expected + " or null";
        protected override JsonNode WritePresent(object value, GraphWriting writing, string field) => inner.Write(value, writing, field)!;
        protected override object? ReadPresent(JsonNode json, GraphReading reading, string field) => inner.Read(json, reading, field);
        public override JsonNode? Write(object? value, GraphWriting writing, string field) => value is null ? null : inner.Write(value, writing, field);
        public override object? Read(JsonNode? json, GraphReading reading, string field) => json is null ? null : inner.Read(json, reading, field);
    }
}
