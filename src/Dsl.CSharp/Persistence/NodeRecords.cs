using System.Collections.Concurrent;
using System.Reflection;
using System.Text.Json.Nodes;
using Duality.Ir;

namespace Duality.Persistence;

/// <summary>
/// The node kinds a graph file can hold, found by reflection: every exported, sealed record deriving
/// from <see cref="Node"/> in this assembly, named by its type name. A kind's fields are its primary
/// constructor's parameters, so a new kind saves and loads without any change here.
/// </summary>
internal static class NodeRecords
{
    private static readonly Lazy<IReadOnlyDictionary<string, Type>> kinds = new(Discover);

    public static IReadOnlyDictionary<string, Type> ByKind => kinds.Value;

    public static bool IsRecord(Type type) => type.GetMethod("<Clone>$", BindingFlags.Public | BindingFlags.Instance) is not null;

    private static IReadOnlyDictionary<string, Type> Discover()
    {
        var records = typeof(Node).Assembly.GetExportedTypes()
            .Where(t => t is { IsClass: true, IsAbstract: false, IsSealed: true } && t.IsSubclassOf(typeof(Node)) && IsRecord(t))
            .ToList();
        if (records.GroupBy(t => t.Name).FirstOrDefault(g => g.Count() > 1) is { } clash)
            throw new GraphFileBugException($"node records {string.Join(" and ", clash.Select(t => t.FullName))} share the kind name '{clash.Key}'; rename one");
        return records.ToDictionary(t => t.Name);
    }
}

/// <summary>One positional field of a record: its name, how to read its value, and how files hold it.</summary>
internal sealed record RecordField(string Name, PropertyInfo Property, FieldCodec Codec, bool HasDefault, object? Default);

/// <summary>
/// A sealed record seen through its primary constructor: the fields in parameter order, written as a JSON
/// object keyed by parameter name, read back by calling that constructor. A field missing from a file
/// takes the parameter's default when it has one (so a file saved before a kind gained an optional field
/// still loads) and is refused otherwise.
/// </summary>
internal sealed class RecordShape
{
    private static readonly ConcurrentDictionary<Type, RecordShape> shapes = new();

    private RecordShape(Type type, ConstructorInfo constructor, IReadOnlyList<RecordField> fields) =>
        (Type, Constructor, Fields) = (type, constructor, fields);

    public Type Type { get; }

    public ConstructorInfo Constructor { get; }

    public IReadOnlyList<RecordField> Fields { get; }

    /// <summary>A node record's shape (fields of every supported type).</summary>
    public static RecordShape OfNode(Type type) => shapes.GetOrAdd(type, t => Build(t, weightsOnly: false));

    /// <summary>A weight record's shape (DoubleTensor fields only).</summary>
    public static RecordShape OfWeights(Type type) => shapes.GetOrAdd(type, t => Build(t, weightsOnly: true));

    private static RecordShape Build(Type type, bool weightsOnly)
    {
        // The compiler gives a positional record a Deconstruct with its primary constructor's parameter types;
        // a derived record also inherits its base's, so the type's own (the longest) is the one.
        var deconstruct = type.GetMethods(BindingFlags.Public | BindingFlags.Instance)
            .Where(m => m.Name == "Deconstruct" && m.ReturnType == typeof(void) && m.GetParameters().All(p => p.IsOut))
            .MaxBy(m => m.GetParameters().Length)
            ?? throw new GraphFileBugException($"{type.Name} has no primary constructor; graph files hold positional records only");
        var constructor = type.GetConstructor(deconstruct.GetParameters().Select(p => p.ParameterType.GetElementType()!).ToArray())
            ?? throw new GraphFileBugException($"{type.Name} has no public primary constructor matching its Deconstruct");
        var fields = constructor.GetParameters().Select(p =>
        {
            var property = type.GetProperty(p.Name!, BindingFlags.Public | BindingFlags.Instance);
            if (property is null || property.PropertyType != p.ParameterType || property.GetMethod is null)
                throw new GraphFileBugException($"{type.Name}.{p.Name} is a constructor parameter without a public property of the same type");
            var value = p.HasDefaultValue && p.DefaultValue is { } d && p.ParameterType.IsEnum ? Enum.ToObject(p.ParameterType, d) : p.DefaultValue;
            return new RecordField(p.Name!, property, FieldCodec.For(type, p, weightsOnly), p.HasDefaultValue, p.HasDefaultValue ? value : null);
        }).ToList();
        return new RecordShape(type, constructor, fields);
    }

    public JsonObject Write(object record, GraphWriting writing, string prefix)
    {
        var json = new JsonObject();
        foreach (var field in Fields)
            json[field.Name] = field.Codec.Write(field.Property.GetValue(record), writing, prefix + field.Name);
        return json;
    }

    public object Read(JsonObject json, GraphReading reading, string prefix)
    {
        foreach (var (key, _) in json)
            if (Fields.All(f => f.Name != key))
                throw reading.Bad(prefix + key, $"is not a field of {Type.Name} (its fields: {string.Join(", ", Fields.Select(f => f.Name))})");
        var arguments = Fields.Select(field =>
            json.TryGetPropertyValue(field.Name, out var value) ? field.Codec.Read(value, reading, prefix + field.Name)
            : field.HasDefault ? field.Default
            : throw reading.Bad(prefix + field.Name, "is missing")).ToArray();
        try
        {
            return Constructor.Invoke(arguments);
        }
        catch (TargetInvocationException e) when (e.InnerException is { } inner)
        {
            var problem = $"does not make a {Type.Name}: {inner.Message}";
            throw prefix.Length == 0 ? reading.BadNode(problem) : reading.Bad(prefix.TrimEnd('.'), problem);
        }
    }
}
