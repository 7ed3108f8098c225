using System.Collections;
using System.Collections.Immutable;

namespace Duality.Ir;

/// <summary>An immutable list that compares by its elements, so records holding it stay structural.</summary>
public sealed class ValueList<T> : IReadOnlyList<T>, IEquatable<ValueList<T>>
{
    /// The list with no elements.
    public static readonly ValueList<T> Empty = new(ImmutableArray<T>.Empty);

    private readonly ImmutableArray<T> items;

    /// A list holding a copy of <paramref name="items"/>, in their order.
    public ValueList(IEnumerable<T> items) => this.items = items.ToImmutableArray();

    private ValueList(ImmutableArray<T> items) => this.items = items;

    /// The number of elements.
    public int Count => items.Length;

    /// The element at <paramref name="index"/>.
    /// <exception cref="IndexOutOfRangeException"><paramref name="index"/> is negative or not below <see cref="Count"/>.</exception>
    public T this[int index] => items[index];

    /// A new list with <paramref name="item"/> appended; this one is unchanged.
    public ValueList<T> Add(T item) => new(items.Add(item));

    /// A new list with the element at <paramref name="index"/> replaced by <paramref name="item"/>; this one is unchanged.
    public ValueList<T> SetItem(int index, T item) => new(items.SetItem(index, item));

    /// The elements in order.
    public IEnumerator<T> GetEnumerator() => ((IEnumerable<T>)items).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// True when both lists hold equal elements in the same order.
    public bool Equals(ValueList<T>? other) =>
        other is not null && (ReferenceEquals(this, other) || items.SequenceEqual(other.items));

    /// True when <paramref name="obj"/> is a <see cref="ValueList{T}"/> with equal elements in the same order.
    public override bool Equals(object? obj) => obj is ValueList<T> other && Equals(other);

    /// A hash of the elements in order, consistent with <see cref="Equals(ValueList{T})"/>.
    public override int GetHashCode()
    {
        var hash = new HashCode();
        foreach (var item in items) hash.Add(item);
        return hash.ToHashCode();
    }

    /// The elements as "[a, b, c]".
    public override string ToString() => "[" + string.Join(", ", items) + "]";

    /// A list holding a copy of <paramref name="items"/>.
    public static implicit operator ValueList<T>(T[] items) => new(items);
}

/// Creates <see cref="ValueList{T}"/> instances.
public static class ValueList
{
    /// A list holding <paramref name="items"/>, in their order.
    public static ValueList<T> Of<T>(params T[] items) => new(items);

    /// A list holding a copy of <paramref name="items"/>, in their order.
    public static ValueList<T> ToValueList<T>(this IEnumerable<T> items) => new(items);
}
