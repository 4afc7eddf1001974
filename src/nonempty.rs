//! A list with at least one item, read without a panic: a configuration's providers, their
//! clients, and what the engine keeps of each provider — all named by their index.

/// At least one `T`, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonEmpty<T> {
    first: T,
    rest: Vec<T>,
}

impl<T> NonEmpty<T> {
    /// The list of these items; `None` if there are none.
    pub fn new(items: Vec<T>) -> Option<NonEmpty<T>> {
        let mut items = items.into_iter();
        let first = items.next()?;
        Some(NonEmpty { first, rest: items.collect() })
    }

    #[allow(clippy::len_without_is_empty)] // never empty
    pub fn len(&self) -> usize {
        1 + self.rest.len()
    }

    pub fn first(&self) -> &T {
        &self.first
    }

    /// Item `i`. Indexes come from this list (or one built from it, item for item), so one past
    /// the end is never made; it would read the first item rather than trap.
    pub fn at(&self, i: usize) -> &T {
        i.checked_sub(1).and_then(|j| self.rest.get(j)).unwrap_or(&self.first)
    }

    /// Item `i`, to change (see [`NonEmpty::at`]).
    pub fn at_mut(&mut self, i: usize) -> &mut T {
        match i.checked_sub(1) {
            Some(j) if j < self.rest.len() => self.rest.get_mut(j).unwrap_or(&mut self.first),
            _ => &mut self.first,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        std::iter::once(&self.first).chain(self.rest.iter())
    }

    /// A list of one item per item of this one, made by `f` from each index and item.
    pub fn map<U>(&self, mut f: impl FnMut(usize, &T) -> U) -> NonEmpty<U> {
        NonEmpty { first: f(0, &self.first), rest: self.rest.iter().enumerate().map(|(j, t)| f(j + 1, t)).collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::NonEmpty;

    #[test]
    fn items_by_index_and_none_empty() {
        assert_eq!(NonEmpty::<u8>::new(Vec::new()), None);
        let mut list = NonEmpty::new(vec![10, 20, 30]).unwrap();
        assert_eq!((list.len(), *list.first(), *list.at(0), *list.at(2)), (3, 10, 10, 30));
        assert_eq!(*list.at(3), 10, "past the end reads the first, never traps");
        *list.at_mut(1) += 1;
        *list.at_mut(9) += 1;
        assert_eq!(list.iter().copied().collect::<Vec<_>>(), vec![11, 21, 30]);
        assert_eq!(list.map(|i, x| i * 100 + *x as usize).iter().copied().collect::<Vec<_>>(), vec![11, 121, 230]);
    }
}
