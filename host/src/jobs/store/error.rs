//! Store errors: the cause a caller sees (`Cause`, `StoreError`) and the internal `Fail`.

/// Why the store is down or a call failed; says nothing about paths or internals, so it
/// may go into a client's error (the log has the details).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Damaged,
    Denied,
    Full,
    Locked,
    Io,
    /// The store refused more data: `jobs.max_store_bytes`.
    OverBudget,
    Closed,
}

impl Cause {
    pub fn phrase(self) -> &'static str {
        match self {
            Cause::Damaged => "the job store file is damaged",
            Cause::Denied => "the relay is not permitted to use the job store",
            Cause::Full => "the disk holding the job store is full",
            Cause::Locked => "the job store is in use by another process",
            Cause::Io => "the job store had an I/O error",
            Cause::OverBudget => "the job store is full (jobs.max_store_bytes)",
            Cause::Closed => "the job store is closed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreError(pub Cause);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.phrase())
    }
}

/// An error inside the writer or a read: redb's (which may latch the store), or bad data.
#[derive(Debug)]
pub(super) enum Fail {
    Db(redb::Error),
    Data(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(impl From<$t> for Fail {
        fn from(e: $t) -> Fail {
            Fail::Db(e.into())
        }
    })*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Db(e) => write!(f, "{e}"),
            Fail::Data(e) => f.write_str(e),
        }
    }
}

impl Fail {
    /// Does this error leave the database unusable until it is reopened?
    pub(super) fn latches(&self) -> bool {
        use redb::Error as E;
        matches!(
            self,
            Fail::Db(
                E::Io(_)
                    | E::PreviousIo
                    | E::Corrupted(_)
                    | E::Backend(_)
                    | E::DatabaseClosed
                    | E::LockPoisoned(_)
                    | E::DatabaseAlreadyOpen
                    | E::LockProtocolMismatch
                    | E::RepairAborted
                    | E::UpgradeRequired(_)
            )
        )
    }

    pub(super) fn cause(&self) -> Cause {
        use redb::Error as E;
        let Fail::Db(e) = self else { return Cause::Damaged };
        match e {
            E::Io(io) => match io.kind() {
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => Cause::Full,
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => Cause::Denied,
                // redb's "Not a redb database" and short files.
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => Cause::Damaged,
                _ => Cause::Io,
            },
            E::Corrupted(_) | E::RepairAborted | E::UpgradeRequired(_) => Cause::Damaged,
            E::DatabaseAlreadyOpen | E::LockProtocolMismatch => Cause::Locked,
            E::DatabaseClosed => Cause::Closed,
            _ => Cause::Io,
        }
    }
}
