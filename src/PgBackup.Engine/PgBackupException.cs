namespace PgBackup.Engine;

/// <summary>What kind of failure an engine error is; the cmdlets map it to a PowerShell ErrorCategory.</summary>
public enum ErrorKind
{
    InvalidArgument,
    ConnectionFailed,
    AuthenticationFailed,
    ObjectNotFound,
    ResourceExists,
    NotInstalled,
    PermissionDenied,
    WriteFailed,
    InvalidData,
    InvalidOperation,
    ToolFailed,
    OperationTimeout,
    /// <summary>Another PgBackup operation holds what this one needs (a base backup of the same server, a recovery into the same folder).</summary>
    ResourceBusy,
    /// <summary>A limit the user set was passed (a WAL backlog too large, a disk too full).</summary>
    LimitsExceeded,
}

/// <summary>
/// An error a user can act on: a stable id (PgBackup.*), the offending value and what to do next.
/// Messages never contain passwords.
/// </summary>
public sealed class PgBackupException : Exception
{
    public PgBackupException(string errorId, ErrorKind kind, string message, object? target, string recommendedAction, Exception? inner = null)
        : base(message, inner)
    {
        ErrorId = errorId.StartsWith("PgBackup.", StringComparison.Ordinal) ? errorId : "PgBackup." + errorId;
        Kind = kind;
        Target = target;
        RecommendedAction = recommendedAction;
    }

    public string ErrorId { get; }
    public ErrorKind Kind { get; }
    public object? Target { get; }
    public string RecommendedAction { get; }
}
