//! Lifecycle tables: a resource's state machine written once, as
//! product.md writes it (each status with the statuses it may move to),
//! and read by every transition of that resource. A move the table does
//! not allow is [`ApiError::illegal_transition`](crate::ApiError::illegal_transition).

/// `edges`: each status with where it may go. A status with no row, or an
/// empty one, is terminal. `T` is usually `S`; a table may use a wider
/// target type for targets that depend on the row (a hypothesis returns
/// to "the status it was blocked from").
#[derive(Clone, Copy, Debug)]
pub struct Lifecycle<S: 'static, T: 'static = S> {
    pub edges: &'static [(S, &'static [T])],
}

impl<S: PartialEq + Copy, T: PartialEq + Copy> Lifecycle<S, T> {
    pub const fn new(edges: &'static [(S, &'static [T])]) -> Self {
        Self { edges }
    }

    /// Where `from` may go.
    pub fn targets(&self, from: S) -> &'static [T] {
        self.edges
            .iter()
            .find(|(status, _)| *status == from)
            .map(|(_, targets)| *targets)
            .unwrap_or(&[])
    }

    pub fn allows(&self, from: S, to: T) -> bool {
        self.targets(from).contains(&to)
    }

    pub fn is_terminal(&self, status: S) -> bool {
        self.targets(status).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_edges() {
        const TABLE: Lifecycle<u8> = Lifecycle::new(&[(1, &[2, 3]), (2, &[3])]);
        assert!(TABLE.allows(1, 3) && TABLE.allows(2, 3));
        assert!(!TABLE.allows(2, 1) && !TABLE.allows(3, 1));
        assert!(TABLE.is_terminal(3) && !TABLE.is_terminal(1));
    }
}
