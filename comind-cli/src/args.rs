//! The command line, as clap parses it.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The exit codes, shown in `--help` and the README.
pub const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    a phase failed (or a check failed: `doctor`, `status`)
  2    invalid input: bad arguments or configuration, a failed preflight; nothing was touched
  3    `plan --detailed-exitcode`: changes are pending
  130  cancelled (Ctrl-C)";

/// Bootstraps one environment of the Comind-Ops platform, locally (k3d + Docker) or
/// on AWS (EKS, RDS, S3, ElastiCache, SQS).
#[derive(Debug, Parser)]
#[command(name = "comind", version, after_help = EXIT_CODES, max_term_width = 100)]
pub struct Cli {
    /// Configuration file [default: ./comind.yaml if it exists]
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "COMIND_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Environment name (overrides `environment` in the file and COMIND_ENV)
    #[arg(long = "env", short = 'e', global = true, value_name = "NAME")]
    pub environment: Option<String>,

    /// Profile (overrides `profile` in the file and COMIND_PROFILE)
    #[arg(long, short = 'p', global = true, value_enum)]
    pub profile: Option<ProfileArg>,

    /// State directory (overrides `state_dir` and COMIND_STATE_DIR)
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// How to print: progress and tables, or one JSON object per line
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputMode::Human)]
    pub output: OutputMode,

    /// What to do
    #[command(subcommand)]
    pub command: Command,
}

/// `--profile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    /// k3d + Docker on this machine
    Local,
    /// EKS, RDS, S3, ElastiCache and SQS
    Aws,
}

impl ProfileArg {
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileArg::Local => "local",
            ProfileArg::Aws => "aws",
        }
    }
}

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputMode {
    /// Live progress on stderr, tables on stdout
    Human,
    /// One JSON object per line on stdout
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented comind.yaml with every default
    Init(InitArgs),
    /// Check prerequisites (Docker daemon, k3d, free ports, AWS credentials) and say how to fix each
    Doctor,
    /// Show what `up` would change, changing nothing
    Plan(PlanArgs),
    /// Bring the environment up (idempotent: a second run changes nothing)
    Up(UpArgs),
    /// Show the health of every phase
    Status(SelectArgs),
    /// Print the outputs applications use (DATABASE_URL, REDIS_URL, bucket names, queue URLs)
    Outputs(OutputsArgs),
    /// Take the environment down, keeping data unless --purge
    Down(DownArgs),
    /// Print the kubeconfig of the environment's cluster, or merge it into yours
    Kubeconfig(KubeconfigArgs),
    /// Maintain the local profile's image registry
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Write the GitOps repository's layout, or push it to the local Git server
    #[command(subcommand)]
    Gitops(GitopsCommand),
    /// Scaffold applications in the GitOps repository
    #[command(subcommand)]
    App(AppCommand),
    /// Seal a Secret into a SealedSecret manifest for the GitOps repository (stdout)
    Seal(SealArgs),
    /// Run the platform's backups now, or list what the backup bucket holds
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Restore a platform service from its backups
    #[command(subcommand)]
    Restore(RestoreCommand),
    /// Open a console of the platform: its URL once it answers, else a port forward
    /// through the API server until Ctrl-C
    Open(OpenArgs),
    /// Print shell completions
    Completions(CompletionsArgs),
    /// Print a Kubernetes ExecCredential with an EKS token (used by the kubeconfig Comind writes)
    #[command(name = "eks-token", hide = true)]
    EksToken(EksTokenArgs),
}

/// `init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Overwrite an existing file
    #[arg(long)]
    pub force: bool,
}

/// Phase selection and concurrency, shared by the run commands.
#[derive(Debug, Args, Clone, Default)]
pub struct SelectArgs {
    /// Run only these phases and what they need (comma-separated or repeated)
    #[arg(long, value_delimiter = ',', value_name = "PHASE")]
    pub only: Vec<String>,

    /// Leave out these phases and what cannot run without them
    #[arg(long, value_delimiter = ',', value_name = "PHASE")]
    pub skip: Vec<String>,

    /// Phases running at once [default: engine.concurrency, 64]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: Option<u32>,
}

/// `plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub select: SelectArgs,

    /// Exit 3 when changes are pending, 0 when in sync
    #[arg(long)]
    pub detailed_exitcode: bool,
}

/// Waiting for another run's lock.
#[derive(Debug, Args, Clone)]
pub struct LockArgs {
    /// Wait this long for another run of this environment to finish [default: do not wait]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lock_timeout: Option<Duration>,
}

/// `up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub select: SelectArgs,

    #[command(flatten)]
    pub lock: LockArgs,

    /// In a production environment, allow changes that replace or delete resources
    #[arg(long)]
    pub allow_destructive: bool,
}

/// `outputs`.
#[derive(Debug, Args)]
pub struct OutputsArgs {
    /// KEY=value lines for a shell or .env file, or a JSON object
    #[arg(long, value_enum, default_value_t = OutputsFormat::Env)]
    pub format: OutputsFormat,

    /// Show secret values instead of `<redacted>`
    #[arg(long)]
    pub reveal: bool,
}

/// `outputs --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputsFormat {
    /// KEY=value lines
    Env,
    /// A JSON object
    Json,
}

/// `kubeconfig`.
#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// Merge it into your kubeconfig (the first file of KUBECONFIG, else ~/.kube/config)
    /// instead of printing it
    #[arg(long)]
    pub merge: bool,

    /// With --merge, also make its context the current one
    #[arg(long, requires = "merge")]
    pub switch_context: bool,
}

/// `registry`.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Delete the layers no tag references any more (run it when nothing pushes)
    Gc,
}

/// `gitops`.
#[derive(Debug, Subcommand)]
pub enum GitopsCommand {
    /// Write the layout Argo CD reads (envs/<env>/, apps/, READMEs) into DIR; never
    /// overwrites a file you changed
    Init(GitopsInitArgs),
    /// Push the committed HEAD of the Git work tree DIR to the local Git server's
    /// branch `gitops.repo.revision`
    Push(GitopsPushArgs),
}

/// `backup`.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Start a backup now as a Job of its CronJob (the nightly run's exact Job), and
    /// wait until it completes
    Run(BackupRunArgs),
    /// List the backups in the backup bucket: PostgreSQL dumps (time, size, whether
    /// complete) and the buckets' mirrors
    List(BackupListArgs),
}

/// `backup list`.
#[derive(Debug, Args)]
pub struct BackupListArgs {
    /// Only this kind of backup [default: both]
    #[arg(value_enum)]
    pub kind: Option<BackupKindArg>,
}

/// `open`.
#[derive(Debug, Args)]
pub struct OpenArgs {
    /// The console
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(comind::gitops::consoles::NAMES))]
    pub console: String,

    /// Open it in the browser too (`xdg-open`, or `open` on macOS)
    #[arg(long)]
    pub browser: bool,

    /// The local port of a port forward [default: a free one]
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub port: u16,

    /// Forward through the API server even when the URL answers
    #[arg(long)]
    pub forward: bool,
}

/// `restore`.
#[derive(Debug, Subcommand)]
pub enum RestoreCommand {
    /// Restore PostgreSQL from a backup (the newest complete one, or --from): a Job in
    /// the cluster downloads the dump, checks its SHA-256, and replays it as the
    /// database administrator, replacing the databases it holds
    Postgres(RestorePostgresArgs),
}

/// `restore postgres`.
#[derive(Debug, Args)]
pub struct RestorePostgresArgs {
    /// The backup to restore, as `comind backup list` names it
    /// (`20261203T030000Z.sql.gz`) [default: the newest complete one]
    #[arg(long, value_name = "KEY")]
    pub from: Option<String>,

    /// Confirm without a prompt by naming the environment (required in production
    /// and without a terminal)
    #[arg(long, value_name = "ENV")]
    pub confirm: Option<String>,

    /// How long to wait for the restore to complete
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1h")]
    pub timeout: Duration,
}

/// Which backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackupKindArg {
    /// The PostgreSQL dump (CronJob postgres-backup)
    Postgres,
    /// The object-store mirror (CronJob objects-backup)
    Objects,
}

/// `backup run`.
#[derive(Debug, Args)]
pub struct BackupRunArgs {
    /// The backup to run [default: both, at once]
    #[arg(value_enum)]
    pub kind: Option<BackupKindArg>,

    /// How long to wait for the Job to complete
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30m")]
    pub timeout: Duration,

    /// Start the Job, and do not wait for it
    #[arg(long)]
    pub no_wait: bool,
}

/// `app`.
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Write an application's Helm chart into the GitOps repository
    /// (apps/<team>/<app>/chart), which Argo CD's ApplicationSet deploys
    New(AppNewArgs),
    /// List the applications of the GitOps repository, with their Argo CD sync and
    /// health when the cluster answers
    List(AppListArgs),
    /// Commit an application's directory, push it to the GitOps repository, and wait
    /// until Argo CD has it synced and healthy
    Deploy(AppDeployArgs),
}

/// `app deploy`.
#[derive(Debug, Args)]
pub struct AppDeployArgs {
    /// The application's name
    pub name: String,

    /// Its team, when applications of several teams share the name
    #[arg(long)]
    pub team: Option<String>,

    /// The GitOps repository's work tree
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,

    /// Push, and do not wait for Argo CD
    #[arg(long)]
    pub no_wait: bool,
}

/// `app list`.
#[derive(Debug, Args)]
pub struct AppListArgs {
    /// The GitOps repository's directory
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
}

/// `app new`.
#[derive(Debug, Args)]
pub struct AppNewArgs {
    /// The application's name (a DNS-1123 label)
    pub name: String,

    /// Its team: the namespace it is deployed into
    #[arg(long)]
    pub team: String,

    /// Its container image; default `<REGISTRY_CLUSTER_NAME>/<team>/<app>:0.1.0`, the
    /// local registry
    #[arg(long)]
    pub image: Option<String>,

    /// The port it listens on
    #[arg(long, default_value_t = 8080)]
    pub port: u16,

    /// The environments it gets values for (repeatable); default the current one
    #[arg(long = "for-env", value_name = "ENV")]
    pub environments: Vec<String>,

    /// The platform services it reads (postgres, object-store, cache, queue)
    #[arg(long, value_delimiter = ',')]
    pub uses: Vec<String>,

    /// The GitOps repository's directory
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,

    /// Print the files it would write, writing nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Overwrite files that differ from what it writes (your edits)
    #[arg(long)]
    pub force: bool,
}

/// `seal`.
#[derive(Debug, Args)]
#[command(after_help = "\
The values come from --from-literal and --from-file, or, when neither is given, from a
Secret manifest (YAML or JSON) on standard input. A value given with --from-literal is
in your shell's history: prefer --from-file or standard input for real secrets.

The certificate is --cert FILE, else the environment's sealing key (kept by `comind up`
in the state directory), else the controller's, fetched through the API server.

Example:
  comind seal --name db --namespace backend --from-file password=./db-password \\
    > apps/backend/api/db-sealed.yaml")]
pub struct SealArgs {
    /// The Secret's name (else the manifest's)
    #[arg(long)]
    pub name: Option<String>,

    /// The Secret's namespace (else the manifest's)
    #[arg(long)]
    pub namespace: Option<String>,

    /// Where the sealed values may be unsealed
    #[arg(long, value_enum, default_value_t = ScopeArg::Strict)]
    pub scope: ScopeArg,

    /// The sealing certificate (PEM), e.g. from `kubeseal --fetch-cert`
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,

    /// A value: KEY=VALUE (repeatable)
    #[arg(long = "from-literal", value_name = "KEY=VALUE")]
    pub from_literal: Vec<String>,

    /// A value from a file: KEY=PATH, or PATH for the file's name as the key (repeatable)
    #[arg(long = "from-file", value_name = "[KEY=]PATH")]
    pub from_file: Vec<String>,

    /// The Secret's type, e.g. kubernetes.io/basic-auth [default: Opaque, or the manifest's]
    #[arg(long = "type", value_name = "TYPE")]
    pub secret_type: Option<String>,
}

/// `seal --scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    /// Only under this name in this namespace
    Strict,
    /// Under any name in this namespace
    NamespaceWide,
    /// Under any name in any namespace
    ClusterWide,
}

/// `gitops init`.
#[derive(Debug, Args)]
pub struct GitopsInitArgs {
    /// The repository's directory (made if missing)
    pub dir: PathBuf,
}

/// `gitops push`.
#[derive(Debug, Args)]
pub struct GitopsPushArgs {
    /// The Git work tree to push
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    /// Replace the server's branch even when that drops commits it has (not a fast-forward)
    #[arg(long)]
    pub force: bool,
}

/// `down`.
#[derive(Debug, Args)]
pub struct DownArgs {
    /// Remove data too: volumes, non-empty buckets, queues with messages, RDS without a final snapshot
    #[arg(long)]
    pub purge: bool,

    /// The environment's name, required to take down a production environment
    #[arg(long, value_name = "ENV")]
    pub confirm: Option<String>,

    #[command(flatten)]
    pub select: SelectArgs,

    #[command(flatten)]
    pub lock: LockArgs,
}

/// `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `eks-token`.
#[derive(Debug, Args)]
pub struct EksTokenArgs {
    /// The EKS cluster name
    #[arg(long)]
    pub cluster: String,

    /// The AWS region
    #[arg(long)]
    pub region: String,

    /// AWS endpoint override (the kubeconfig passes what the environment used)
    #[arg(long)]
    pub endpoint_url: Option<String>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. 30s or 5m"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn selections_split_on_commas() {
        let cli = Cli::try_parse_from([
            "comind",
            "up",
            "--only",
            "postgres,cache",
            "--skip",
            "queue",
        ])
        .unwrap();
        let Command::Up(up) = cli.command else {
            panic!()
        };
        assert_eq!(up.select.only, ["postgres", "cache"]);
        assert_eq!(up.select.skip, ["queue"]);
    }
}
