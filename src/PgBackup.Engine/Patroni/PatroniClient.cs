using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Npgsql;
using PgBackup.Engine.Connection;

namespace PgBackup.Engine.Patroni;

/// <summary>Where a Patroni REST API is, and the basic-auth login its unsafe methods (switchover, failover) need.</summary>
public sealed record PatroniEndpoint(Uri Url, string? User = null, string? Password = null)
{
    /// <summary>A URL as a user gives it: http(s)://host:port, or host:port (http).</summary>
    /// <param name="allowInsecureHttp">Send a login over plain HTTP to another machine (the AllowInsecureHttp setting).</param>
    public static PatroniEndpoint Parse(string url, string? user, string? password, bool allowInsecureHttp = false)
    {
        var text = url.Contains("://", StringComparison.Ordinal) ? url : "http://" + url;
        if (!Uri.TryCreate(text, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
            throw new PgBackupException("InvalidPatroniUrl", ErrorKind.InvalidArgument, $"'{url}' is not the URL of a Patroni REST API.", url,
                "Give it as http://host:8008 or https://host:8008 (restapi.connect_address in the member's patroni.yml).");
        // A basic-auth login travels in clear over HTTP: only to this machine, or when the user allows it.
        if (user != null && uri.Scheme == "http" && !uri.IsLoopback && !allowInsecureHttp)
            throw new PgBackupException("InsecurePatroni", ErrorKind.InvalidArgument,
                $"The login for Patroni's REST API would travel in clear over plain HTTP to {uri.Host}. Nothing was sent.", url,
                "Give Patroni's REST API a certificate (restapi.certfile in patroni.yml) and use https://, or set AllowInsecureHttp (PGBACKUP_ALLOWINSECUREHTTP) on a private network.");
        return new PatroniEndpoint(uri, user, password);
    }
}

/// <summary>
/// Patroni's REST API: the cluster's members and history, and the switchover and failover that Patroni carries out with
/// its leader key in the consensus store. PgBackup asks Patroni for these and never promotes or demotes a member behind
/// its back. TLS certificates are verified as for any HTTPS request.
/// </summary>
public sealed class PatroniClient : IDisposable
{
    private readonly HttpClient _http;
    private readonly PatroniEndpoint _endpoint;

    public PatroniClient(PatroniEndpoint endpoint)
    {
        _endpoint = endpoint;
        _http = new HttpClient { BaseAddress = endpoint.Url, Timeout = TimeSpan.FromSeconds(60) };
        if (endpoint.User != null)
            _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{endpoint.User}:{endpoint.Password}")));
    }

    public string Display => _endpoint.Url.GetLeftPart(UriPartial.Authority);

    /// <summary>GET /cluster, /history and /patroni: the members with their roles, states and lag, the leader, the timeline, pause, history.</summary>
    public async Task<PatroniCluster> GetClusterAsync(CancellationToken ct)
    {
        var cluster = await GetJsonAsync("cluster", ct).ConfigureAwait(false);
        var self = await GetJsonAsync("patroni", ct).ConfigureAwait(false);
        var history = await GetJsonAsync("history", ct).ConfigureAwait(false);
        var members = (cluster["members"] as JsonArray ?? []).OfType<JsonObject>().Select(m => new PatroniMember
        {
            Name = (string?)m["name"] ?? "",
            Role = (string?)m["role"] ?? "",
            State = (string?)m["state"] ?? "",
            Host = (string?)m["host"] ?? "",
            Port = m["port"] is JsonValue port && port.TryGetValue<int>(out var p) ? p : 0,
            Timeline = m["timeline"] is JsonValue tl && tl.TryGetValue<uint>(out var t) ? t : null,
            LagBytes = m["lag"] is JsonValue lag && lag.TryGetValue<long>(out var l) ? l : null,
            ApiUrl = (string?)m["api_url"] ?? "",
        }).ToArray();
        var leader = members.FirstOrDefault(m => m.Role is "leader" or "master" or "standby_leader");
        return new PatroniCluster
        {
            RestUrl = Display,
            Scope = (string?)self["patroni"]?["scope"] ?? "",
            Leader = leader?.Name,
            Timeline = leader?.Timeline,
            Paused = cluster["pause"] is JsonValue paused && paused.TryGetValue<bool>(out var isPaused) && isPaused,
            Members = members,
            History = (history as JsonArray ?? []).OfType<JsonArray>().Select(h => string.Join(" ", h.Select(v => v?.ToString()))).ToArray(),
        };
    }

    /// <summary>POST /switchover: Patroni demotes the leader and promotes the candidate; at <paramref name="at"/>, it only schedules it.</summary>
    public Task<string> SwitchoverAsync(string leader, string candidate, DateTimeOffset? at, CancellationToken ct)
    {
        var body = new JsonObject { ["leader"] = leader, ["candidate"] = candidate };
        if (at is { } when) body["scheduled_at"] = when.ToString("o", System.Globalization.CultureInfo.InvariantCulture);
        return PostAsync("switchover", body, ct);
    }

    /// <summary>POST /failover: Patroni promotes the candidate without a healthy leader to demote.</summary>
    public Task<string> FailoverAsync(string candidate, CancellationToken ct) => PostAsync("failover", new JsonObject { ["candidate"] = candidate }, ct);

    private async Task<string> PostAsync(string path, JsonObject body, CancellationToken ct)
    {
        using var content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json");
        using var response = await SendAsync(() => _http.PostAsync(path, content, ct)).ConfigureAwait(false);
        var text = (await response.Content.ReadAsStringAsync(ct).ConfigureAwait(false)).Trim();
        if (response.StatusCode is HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden)
            throw new PgBackupException("PatroniAuthenticationFailed", ErrorKind.AuthenticationFailed, $"Patroni at {Display} refused the login for POST /{path}: {text}", Display,
                "Pass -PatroniCredential with restapi.authentication's username and password from patroni.yml.");
        if (!response.IsSuccessStatusCode)
            throw new PgBackupException("PatroniRefused", ErrorKind.InvalidOperation, $"Patroni at {Display} refused the {path}: {text} (HTTP {(int)response.StatusCode}).", Display,
                "Read Patroni's reason above (patronictl list shows the members); a candidate must be a healthy replica that is not tagged nofailover, and the cluster must not be paused.");
        return text;
    }

    private async Task<JsonNode> GetJsonAsync(string path, CancellationToken ct)
    {
        using var response = await SendAsync(() => _http.GetAsync(path, ct)).ConfigureAwait(false);
        var text = await response.Content.ReadAsStringAsync(ct).ConfigureAwait(false);
        // /patroni answers 503 on a member that is not running, with the same body.
        try { return JsonNode.Parse(text) ?? new JsonObject(); }
        catch (JsonException ex)
        {
            throw new PgBackupException("PatroniUnreachable", ErrorKind.ConnectionFailed, $"{Display}/{path} did not answer as Patroni's REST API (HTTP {(int)response.StatusCode}): {ex.Message}", Display,
                "Give the REST API of a member (restapi.connect_address in its patroni.yml), for example http://db1:8008.", ex);
        }
    }

    private async Task<HttpResponseMessage> SendAsync(Func<Task<HttpResponseMessage>> send)
    {
        try { return await send().ConfigureAwait(false); }
        catch (HttpRequestException ex)
        {
            throw new PgBackupException("PatroniUnreachable", ErrorKind.ConnectionFailed, $"Patroni's REST API at {Display} did not answer: {ex.Message}", Display,
                "Check the URL (restapi.connect_address in patroni.yml), that Patroni runs there and that this machine may reach its port; for https, that its certificate is trusted here.", ex);
        }
        catch (TaskCanceledException ex) when (ex.InnerException is TimeoutException)
        {
            throw new PgBackupException("PatroniUnreachable", ErrorKind.OperationTimeout, $"Patroni's REST API at {Display} did not answer within {_http.Timeout}.", Display,
                "Check that Patroni runs and is not stuck (its log), then try again.", ex);
        }
    }

    public void Dispose() => _http.Dispose();

    /// <summary>
    /// Whether Patroni manages the server of <paramref name="connection"/>, which must then be changed only through Patroni:
    /// Patroni keeps a session open on every member it runs (application_name Patroni...), and the postgresql.conf it
    /// writes says it will overwrite it. Either sign is enough; a role that may see neither finds none.
    /// </summary>
    public static async Task<bool> ManagesAsync(NpgsqlConnection connection, string? localDataDirectory, CancellationToken ct)
    {
        if (localDataDirectory != null && File.Exists(Path.Combine(localDataDirectory, "patroni.dynamic.json"))) return true;
        if (await ServerSession.ScalarAsync<bool>(connection, "select exists (select 1 from pg_stat_activity where application_name like 'Patroni%')", ct).ConfigureAwait(false)) return true;
        try
        {
            var head = await ServerSession.ScalarAsync<string>(connection,
                "select case when pg_has_role(current_user, 'pg_read_server_files', 'member') or (select rolsuper from pg_roles where rolname = current_user) then pg_read_file(current_setting('config_file'), 0, 200) else '' end", ct).ConfigureAwait(false);
            return head?.Contains("overwritten by Patroni", StringComparison.Ordinal) == true;
        }
        catch (PostgresException) { return false; }
    }

    /// <summary>Refuses <paramref name="what"/> on <paramref name="server"/> when Patroni manages it (see <see cref="ManagesAsync"/>), naming the Patroni way.</summary>
    public static async Task RefuseIfManagedAsync(ConnectionTarget server, string what, string patroniWay, CancellationToken ct, string? localDataDirectory = null)
    {
        await using var connection = await ServerSession.OpenAsync(server, ct).ConfigureAwait(false);
        if (await ManagesAsync(connection, localDataDirectory, ct).ConfigureAwait(false)) throw Refusal(server.Display, what, patroniWay);
    }

    public const string SwitchoverWay = "Switch over through Patroni: Switch-PgPrimary -Patroni <a member's REST API URL> -Primary <leader> -Candidate <member> (or patronictl switchover).";
    public const string FailoverWay = "Fail over through Patroni: Switch-PgPrimary -Failover -Patroni <a member's REST API URL> -Candidate <member> (or patronictl failover); Patroni fails over by itself when the leader key expires.";

    /// <summary>The error for an action PgBackup does not take on its own on a member Patroni manages.</summary>
    public static PgBackupException Refusal(string server, string what, string patroniWay) =>
        new("ManagedByPatroni", ErrorKind.InvalidOperation,
            $"{server} is managed by Patroni, so PgBackup does not {what} by itself: Patroni would fight it over its leader key. Nothing was changed.", server, patroniWay);
}
