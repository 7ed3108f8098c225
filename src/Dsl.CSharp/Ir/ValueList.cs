using System.Collections;
using System.Collections.Immutable;

namespace Duality.Ir;

/// <summary>An immutable list that compares by its elements, so records holding it stay structural.</summary>
public sealed class ValueList<T> : IReadOnlyList<T>, IEquatable<ValueList<T>>
{
    public static readonly ValueList<T> Empty = new(ImmutableArray<T>.Empty);

    private readonly ImmutableArray<T> items;

    public ValueList(IEnumerable<T> items) => this.items = items.ToImmutableArray();

    private ValueList(ImmutableArray<T> items) => this.items = items;

    public int Count => items.Length;

    public T this[int index] => items[index];

    public ValueList<T> Add(T item) => new(items.Add(item));

    public ValueList<T> SetItem(int index, T item) => new(items.SetItem(index, item));

    public IEnumerator<T> GetEnumerator() => ((IEnumerable<T>)items).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    public bool Equals(ValueList<T>? other) =>
        other is not null && (ReferenceEquals(this, other) || items.SequenceEqual(other.items));

    public override bool Equals(object? obj) => obj is ValueList<T> other && Equals(other);

    public override int GetHashCode()
    {
        var hash = new HashCode();
        foreach (var item in items) hash.Add(item);
        return hash.ToHashCode();
    }

    public override string ToString() => "[" + string.Join(", ", items) + "]";

    public static implicit operator ValueList<T>(T[] items) => new(items);
}

public static class ValueList
{
    public static ValueList<T> Of<T>(params T[] items) => new(items);

    public static ValueList<T> ToValueList<T>(this IEnumerable<T> items) => new(items);
}
