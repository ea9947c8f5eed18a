//! What each command does: load the configuration, build a [`Bootstrap`] from the
//! profile's providers, run it, render the result, choose the exit code. Everything
//! that bootstraps lives in the library crates.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;
use comind_core::config::{Config, INIT_TEMPLATE, LoadOptions, Origin, Override};
use comind_core::engine::{RunOptions, RunReport};
use comind_core::event::{EVENT_SCHEMA_VERSION, RunOutcome};
use comind_core::lock::LockWait;
use comind_core::{
    Bootstrap, CheckStatus, DestroyOptions, DownOptions, Error, ErrorKind, PhaseId, UpOptions,
};

use crate::args::{
    AppCommand, AppDeployArgs, AppListArgs, AppNewArgs, BackupCommand, BackupKindArg,
    BackupListArgs, BackupRunArgs, Cli, Command, CompletionsArgs, DownArgs, EksTokenArgs,
    GitopsCommand, GitopsInitArgs, GitopsPushArgs, InitArgs, KubeconfigArgs, LockArgs, OpenArgs,
    OutputMode, OutputsArgs, OutputsFormat, PlanArgs, RegistryCommand, RestoreCommand,
    RestorePostgresArgs, ScopeArg, SealArgs, SelectArgs, UpArgs,
};
use crate::render::{EventPrinter, report};

/// Exit code for a failed phase or check.
const FAILED: u8 = 1;
/// Exit code for invalid input.
const INVALID: u8 = 2;
/// Exit code for `plan --detailed-exitcode` with pending changes.
const PENDING: u8 = 3;
/// Exit code for a cancelled run.
const CANCELLED: u8 = 130;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    let mode = cli.output;
    let result = match &cli.command {
        Command::Init(args) => init(&cli, args),
        Command::Completions(args) => completions(args),
        Command::Seal(args) => seal(&cli, args).await,
        Command::EksToken(args) => eks_token(args).await,
        Command::Doctor => doctor(&cli).await,
        Command::Plan(args) => plan(&cli, args).await,
        Command::Up(args) => up(&cli, args).await,
        Command::Status(args) => status(&cli, args).await,
        Command::Outputs(args) => outputs(&cli, args).await,
        Command::Down(args) => down(&cli, args).await,
        Command::Kubeconfig(args) => kubeconfig(&cli, args),
        Command::Registry(RegistryCommand::Gc) => registry_gc(&cli).await,
        Command::Gitops(GitopsCommand::Init(args)) => gitops_init(&cli, args),
        Command::Gitops(GitopsCommand::Push(args)) => gitops_push(&cli, args).await,
        Command::Backup(BackupCommand::Run(args)) => backup_run(&cli, args).await,
        Command::Backup(BackupCommand::List(args)) => backup_list(&cli, args).await,
        Command::Restore(RestoreCommand::Postgres(args)) => restore_postgres(&cli, args).await,
        Command::Open(args) => open(&cli, args).await,
        Command::App(AppCommand::New(args)) => app_new(&cli, args),
        Command::App(AppCommand::List(args)) => app_list(&cli, args).await,
        Command::App(AppCommand::Deploy(args)) => app_deploy(&cli, args).await,
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            print_error(&err, mode);
            ExitCode::from(exit_code_of(&err))
        }
    }
}

fn exit_code_of(err: &Error) -> u8 {
    match err.kind() {
        ErrorKind::InvalidInput => INVALID,
        ErrorKind::Cancelled => CANCELLED,
        _ => FAILED,
    }
}

fn print_error(err: &Error, mode: OutputMode) {
    if mode == OutputMode::Json {
        let line = serde_json::json!({
            "v": EVENT_SCHEMA_VERSION,
            "type": "error",
            "error": err.report(),
        });
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }
    eprintln!("{}", report::error(err));
}

fn exit_code_of_run(report: &RunReport) -> u8 {
    match report.summary.outcome {
        RunOutcome::Succeeded => 0,
        RunOutcome::Failed => FAILED,
        RunOutcome::Rejected => INVALID,
        RunOutcome::Cancelled => CANCELLED,
    }
}

/// Loads the configuration with the global flags applied.
fn load_config(cli: &Cli) -> Result<Config, Error> {
    let mut options = LoadOptions::from_process(cli.config.clone());
    let mut flag = |name: &str, path: &str, value: String| {
        options.overrides.push(Override {
            origin: Origin::Flag(name.to_string()),
            path: path.to_string(),
            value,
        });
    };
    if let Some(env) = &cli.environment {
        flag("--env", "environment", env.clone());
    }
    if let Some(profile) = cli.profile {
        flag("--profile", "profile", profile.as_str().to_string());
    }
    if let Some(dir) = &cli.state_dir {
        flag("--state-dir", "state_dir", dir.display().to_string());
    }
    let config = Config::load(&options)?;
    // On stderr in every output mode: stdout stays the event stream.
    for warning in config.warnings() {
        eprintln!("warning: {warning}");
    }
    Ok(config)
}

fn bootstrap(
    cli: &Cli,
    select: Option<&SelectArgs>,
    lock: Option<&LockArgs>,
) -> Result<Bootstrap, Error> {
    let mut bootstrap = comind::bootstrap(load_config(cli)?)?;
    if let Some(n) = select.and_then(|s| s.concurrency) {
        bootstrap = bootstrap.with_concurrency(n as usize);
    }
    if let Some(timeout) = lock.and_then(|l| l.lock_timeout) {
        bootstrap = bootstrap.with_lock_wait(if timeout.is_zero() {
            LockWait::Fail
        } else {
            LockWait::Timeout(timeout)
        });
    }
    Ok(bootstrap)
}

fn run_options(select: &SelectArgs, purge: bool) -> RunOptions {
    RunOptions {
        only: select.only.iter().map(PhaseId::new).collect(),
        skip: select.skip.iter().map(PhaseId::new).collect(),
        destroy: DestroyOptions { purge },
    }
}

/// Cancels the bootstrap on Ctrl-C or SIGTERM: the first asks running phases to stop
/// at a safe point, the second aborts.
fn handle_interrupts(bootstrap: &Bootstrap) -> tokio::task::JoinHandle<()> {
    let cancel = bootstrap.cancellation().clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut count = 0;
        loop {
            #[cfg(unix)]
            let signalled = match term.as_mut() {
                Some(term) => tokio::select! {
                    r = tokio::signal::ctrl_c() => r.is_ok(),
                    r = term.recv() => r.is_some(),
                },
                None => tokio::signal::ctrl_c().await.is_ok(),
            };
            #[cfg(not(unix))]
            let signalled = tokio::signal::ctrl_c().await.is_ok();
            if !signalled {
                return;
            }
            count += 1;
            if count == 1 {
                eprintln!(
                    "\ninterrupted: starting nothing new; running phases stop at a safe point \
                     (interrupt again to abort them)"
                );
            } else {
                eprintln!("\ninterrupted again: aborting running phases");
            }
            cancel.request();
        }
    })
}

async fn execute<F, Fut>(bootstrap: &Bootstrap, mode: OutputMode, op: F) -> Result<RunReport, Error>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<RunReport, Error>>,
{
    let printer = EventPrinter::start(bootstrap.events(), mode);
    let interrupts = handle_interrupts(bootstrap);
    let result = op().await;
    printer.finish().await;
    interrupts.abort();
    result
}

/// Writes a line to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn stdout_line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

fn print_human(mode: OutputMode, text: &str) {
    if mode == OutputMode::Human && !text.is_empty() {
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "{text}");
        let _ = out.flush();
    }
}

async fn plan(cli: &Cli, args: &PlanArgs) -> Result<u8, Error> {
    let bootstrap = bootstrap(cli, Some(&args.select), None)?;
    let run = run_options(&args.select, false);
    let report = execute(&bootstrap, cli.output, || bootstrap.plan(&run)).await?;
    if !report.succeeded() {
        // A plan that could not read everything must not look like "no changes".
        print_human(
            cli.output,
            &format!(
                "{}\nplan incomplete: the phases below could not be read\n\n{}",
                report::plan_of_read_phases(&report),
                report::summary(&report)
            ),
        );
        return Ok(exit_code_of_run(&report));
    }
    print_human(cli.output, &report::plan(&report));
    Ok(if args.detailed_exitcode && report.has_pending_changes() {
        PENDING
    } else {
        0
    })
}

async fn up(cli: &Cli, args: &UpArgs) -> Result<u8, Error> {
    let bootstrap = bootstrap(cli, Some(&args.select), Some(&args.lock))?;
    let run = run_options(&args.select, false);
    let options = UpOptions {
        allow_destructive: args.allow_destructive,
    };
    let report = execute(&bootstrap, cli.output, || bootstrap.up(&run, &options)).await?;
    print_human(cli.output, &report::summary(&report));
    if report.succeeded() {
        let done = match report.summary.changes {
            0 => "\nup to date: nothing needed changing.".to_string(),
            n => format!("\nup: {n} change(s) made; the environment matches the configuration."),
        };
        print_human(
            cli.output,
            &format!(
                "{done} Outputs for applications: `comind outputs --format env` \
                 (add --reveal to include secrets)\n"
            ),
        );
    } else if report.summary.outcome == RunOutcome::Failed {
        print_human(
            cli.output,
            "\nchanges made by failed or cancelled phases are not counted; \
             `comind plan` shows where the environment stands\n",
        );
    }
    Ok(exit_code_of_run(&report))
}

async fn down(cli: &Cli, args: &DownArgs) -> Result<u8, Error> {
    let bootstrap = bootstrap(cli, Some(&args.select), Some(&args.lock))?;
    let run = run_options(&args.select, args.purge);
    let options = DownOptions {
        confirm: args.confirm.clone(),
    };
    let report = execute(&bootstrap, cli.output, || bootstrap.down(&run, &options)).await?;
    print_human(cli.output, &report::summary(&report));
    let kept = report::kept(&report);
    if !kept.is_empty() {
        print_human(
            cli.output,
            &format!("{kept}  (`comind down --purge` removes these too)\n"),
        );
    }
    Ok(exit_code_of_run(&report))
}

async fn status(cli: &Cli, args: &SelectArgs) -> Result<u8, Error> {
    let bootstrap = bootstrap(cli, Some(args), None)?;
    let run = run_options(args, false);
    let report = execute(&bootstrap, cli.output, || bootstrap.status(&run)).await?;
    print_human(cli.output, &report::status(&report));
    print_consoles(cli, bootstrap.env(), &report.merged_outputs()).await;
    Ok(if report.all_ready() { 0 } else { FAILED })
}

/// The consoles' URLs and whether each answers, asked all at once (`status`).
async fn print_consoles(cli: &Cli, env: &comind_core::Environment, outputs: &comind_core::Outputs) {
    use comind::gitops::consoles;
    let listed = consoles::consoles(env, outputs);
    // Only those with a URL are asked; the others are reached by a forward.
    let answers = futures_util::future::join_all(listed.iter().map(|c| async {
        match c.url {
            Some(_) => Some(c.answer().await),
            None => None,
        }
    }))
    .await;
    if cli.output == OutputMode::Json {
        let entries: Vec<_> = listed
            .iter()
            .zip(&answers)
            .map(|(console, answer)| {
                let mut entry = serde_json::json!({
                    "name": console.name, "url": console.url,
                    "forwardable": console.service.is_some(),
                });
                if let (Some(object), Some(serde_json::Value::Object(more))) = (
                    entry.as_object_mut(),
                    answer.as_ref().map(|a| serde_json::json!(a)),
                ) {
                    object.extend(more);
                }
                entry
            })
            .collect();
        stdout_line(
            &serde_json::json!({ "v": EVENT_SCHEMA_VERSION, "type": "consoles", "consoles": entries })
                .to_string(),
        );
        return;
    }
    if listed.is_empty() {
        return;
    }
    let mut text = String::from("\nconsoles (`comind open NAME`):\n");
    for (console, answer) in listed.iter().zip(&answers) {
        match (&console.url, answer) {
            (Some(url), Some(answer)) => {
                text.push_str(&format!("  {:<13} {url}  {answer}\n", console.name));
            }
            _ => text.push_str(&format!(
                "  {:<13} in the cluster only: `comind open {}` forwards to it\n",
                console.name, console.name
            )),
        }
    }
    print_human(cli.output, &text);
}

async fn open(cli: &Cli, args: &OpenArgs) -> Result<u8, Error> {
    use comind::gitops::consoles::{self, PortForward};
    let bootstrap = bootstrap(cli, None, None)?;
    let env = bootstrap.env().clone();
    // The queue's and the object store's URLs are their services' endpoints.
    let outputs = match args.console.as_str() {
        "queue" | "object-store" => {
            let id = if args.console == "queue" {
                "queue"
            } else {
                "object-store"
            };
            let run = RunOptions {
                only: vec![PhaseId::new(id)],
                ..RunOptions::default()
            };
            bootstrap.outputs(&run).await?.0
        }
        _ => comind_core::Outputs::new(),
    };
    let console = consoles::consoles(&env, &outputs)
        .into_iter()
        .find(|c| c.name == args.console)
        .ok_or_else(|| {
            Error::invalid_input(format!(
                "environment `{}` has no {} console: its configuration leaves it out",
                env.name(),
                args.console
            ))
            .with_hint("enable it in comind.yaml (Argo CD and its monitoring add-on, or the service), then `comind up`")
        })?;
    let mut why_not = None;
    if let Some(url) = &console.url
        && !args.forward
    {
        let answer = console.answer().await;
        if answer.answered() {
            print_console(cli, console.name, url, None);
            browse(args.browser, url);
            return Ok(0);
        }
        eprintln!("{} at {url} {answer}", console.name);
        why_not = Some(format!("{url} {answer}"));
    }
    let Some(service) = &console.service else {
        return Err(match why_not {
            Some(why) => Error::unavailable(format!("the {} console at {why}", console.name))
                .with_hint("check `comind status`: the service may be stopped"),
            None => Error::invalid_input(format!(
                "the {} console does not run in the cluster, so it cannot be forwarded",
                console.name
            ))
            .with_hint(format!(
                "leave out --forward: `comind open {}`",
                console.name
            )),
        });
    };
    let cluster = comind::gitops::access::connect_env(&env).await?;
    let forward = PortForward::open(&cluster.client, service, args.port).await?;
    let url = format!("http://{}", forward.local_addr()?);
    eprintln!(
        "forwarding {url} to Pod {}/{} through the API server; Ctrl-C stops it",
        service.namespace,
        forward.pod()
    );
    print_console(cli, console.name, &url, Some(forward.pod()));
    browse(args.browser, &url);
    tokio::select! {
        () = forward.serve(|message| eprintln!("warning: {message}")) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(0)
}

/// What `open` prints on stdout: the URL, or the JSON line.
fn print_console(cli: &Cli, name: &str, url: &str, pod: Option<&str>) {
    if cli.output == OutputMode::Json {
        stdout_line(
            &serde_json::json!({
                "v": EVENT_SCHEMA_VERSION, "type": "console",
                "console": name, "url": url, "forwarded_to": pod,
            })
            .to_string(),
        );
    } else {
        print_human(cli.output, &format!("{url}\n"));
    }
}

/// Opens `url` in the desktop's browser, when asked; a missing opener is a warning.
fn browse(asked: bool, url: &str) {
    if !asked {
        return;
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    if let Err(e) = std::process::Command::new(opener)
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        eprintln!("warning: cannot open a browser with `{opener}`: {e}; open {url} yourself");
    }
}

async fn outputs(cli: &Cli, args: &OutputsArgs) -> Result<u8, Error> {
    let bootstrap = bootstrap(cli, None, None)?;
    let (outputs, report) = bootstrap.outputs(&RunOptions::default()).await?;
    for phase in &report.summary.phases {
        if let Some(error) = &phase.error {
            eprintln!("warning: outputs of `{}` are unknown: {error}", phase.id);
        } else if let Some(plan) = report.plans.get(&phase.id)
            && plan.outputs.is_none()
        {
            eprintln!(
                "note: `{}` is not up to date; its outputs are known after `comind up`",
                phase.id
            );
        }
    }
    let json = args.format == OutputsFormat::Json || cli.output == OutputMode::Json;
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(out, "{}", outputs.to_json(args.reveal));
    } else {
        let _ = write!(out, "{}", outputs.to_env_lines(args.reveal));
    }
    let _ = out.flush();
    Ok(if report.succeeded() { 0 } else { FAILED })
}

fn kubeconfig(cli: &Cli, args: &KubeconfigArgs) -> Result<u8, Error> {
    let config = load_config(cli)?;
    let env = comind_core::Environment::new(config)?;
    let path = env.state().kubeconfig_path();
    if !path.exists() {
        return Err(comind_core::Error::not_found(format!(
            "environment `{}` has no kubeconfig at {}",
            env.name(),
            path.display()
        ))
        .with_resource(path.display().to_string())
        .with_hint("run `comind up`, which makes the cluster and writes it"));
    }
    if args.merge {
        let into = comind::gitops::kubeconfig::user_kubeconfig_path()?;
        let merged = comind::gitops::kubeconfig::merge(&path, &into, args.switch_context)?;
        let mut text = format!(
            "merged {} into {}",
            merged.contexts.join(", "),
            merged.path.display()
        );
        if merged.switched {
            text.push_str("; it is the current context now");
        }
        text.push('\n');
        print_human(cli.output, &text);
        if cli.output == OutputMode::Json {
            let line = serde_json::json!({
                "merged_into": merged.path,
                "contexts": merged.contexts,
                "switched": merged.switched,
            });
            stdout_line(&line.to_string());
        }
        return Ok(0);
    }
    // The user asked for the file, credentials included: that is what it is for.
    let text = std::fs::read_to_string(&path).map_err(|e| {
        comind_core::Error::unavailable(format!("cannot read {}: {e}", path.display()))
            .with_resource(path.display().to_string())
    })?;
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{text}");
    let _ = out.flush();
    Ok(0)
}

#[cfg(feature = "local")]
async fn registry_gc(cli: &Cli) -> Result<u8, Error> {
    let env = comind_core::Environment::new(load_config(cli)?)?;
    let provider = comind::local::LocalProvider::new();
    let registry = comind::local::RegistryPhase::new(provider.docker(env.config()));
    let collected = registry.garbage_collect(&env).await?;
    if cli.output == OutputMode::Json {
        let line = serde_json::json!({ "deleted_blobs": collected.deleted_blobs });
        stdout_line(&line.to_string());
    } else {
        print_human(
            cli.output,
            &format!(
                "registry garbage collection: {} blob(s) deleted\n",
                collected.deleted_blobs
            ),
        );
    }
    Ok(0)
}

#[cfg(not(feature = "local"))]
async fn registry_gc(_cli: &Cli) -> Result<u8, Error> {
    // Says the local profile is not in this build, and how to get it.
    comind::providers(comind_core::Profile::Local).map(|_| 0)
}

async fn app_list(cli: &Cli, args: &AppListArgs) -> Result<u8, Error> {
    let config = load_config(cli)?;
    let env = comind_core::Environment::new(config)?;
    let listed = comind::gitops::scaffold::list(&env, &args.repo)?;
    // Argo CD's view, when the environment's cluster answers; the list stands without.
    let names: Vec<String> = listed.iter().map(|a| a.application.clone()).collect();
    let statuses = match comind::gitops::access::connect_env(&env).await {
        Ok(cluster) => {
            comind::gitops::applications::summaries(
                &cluster.client,
                comind::gitops::platform::argocd::NAMESPACE,
                &names,
            )
            .await
        }
        Err(_) => vec!["unknown (no cluster)".to_string(); names.len()],
    };
    let rows: Vec<_> = listed.iter().zip(statuses).collect();
    if cli.output == OutputMode::Json {
        for (app, health) in &rows {
            let line = serde_json::json!({
                "team": app.team, "app": app.name, "application": app.application, "status": health,
            });
            stdout_line(&line.to_string());
        }
        return Ok(0);
    }
    let mut text = String::new();
    if rows.is_empty() {
        text.push_str(
            "no application in the repository: `comind app new NAME --team TEAM` makes one\n",
        );
    }
    for (app, health) in &rows {
        text.push_str(&format!(
            "{:<16} {:<24} {:<32} {health}\n",
            app.team, app.name, app.application
        ));
    }
    print_human(cli.output, &text);
    Ok(0)
}

#[cfg(not(feature = "local"))]
async fn local_git_server_url(_cli: &Cli, _config: &Config) -> Result<String, Error> {
    // Says the local profile is not in this build, and how to get it.
    comind::providers(comind_core::Profile::Local).map(|_| String::new())
}

async fn app_deploy(cli: &Cli, args: &AppDeployArgs) -> Result<u8, Error> {
    use comind::gitops::{applications, platform, repository, scaffold};
    let config = load_config(cli)?;
    let env = std::sync::Arc::new(comind_core::Environment::new(config.clone())?);
    let found: Vec<_> = scaffold::list(&env, &args.repo)?
        .into_iter()
        .filter(|a| a.name == args.name && args.team.as_ref().is_none_or(|t| *t == a.team))
        .collect();
    let app = match found.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(Error::not_found(format!(
                "no application `{}` in the GitOps repository {}",
                args.name,
                args.repo.display()
            ))
            .with_hint(format!(
                "`comind app new {} --team TEAM --repo {}` writes it",
                args.name,
                args.repo.display()
            )));
        }
        many => {
            let teams: Vec<&str> = many.iter().map(|a| a.team.as_str()).collect();
            return Err(Error::invalid_input(format!(
                "applications named `{}` exist for teams {}",
                args.name,
                teams.join(", ")
            ))
            .with_hint("name the one to deploy with --team"));
        }
    };
    let dir = args.repo.join(platform::gitops::repo_path(
        &config.gitops.repo,
        &format!("apps/{}/{}", app.team, app.name),
    ));
    let url = if config.gitops.repo.is_local() {
        local_git_server_url(cli, &config).await?
    } else {
        config.gitops.repo.url.clone()
    };
    let remote = repository::Remote::from_settings(&config.gitops.repo, url)?;
    let branch = config.gitops.repo.revision.clone();
    let message = format!("Deploy {}/{} to {}", app.team, app.name, config.environment);
    let repo = args.repo.clone();
    let deployed = tokio::task::spawn_blocking(move || {
        repository::deploy(&repo, &dir, &remote, &branch, &message)
    })
    .await
    .map_err(|e| Error::internal(format!("the deploy was interrupted: {e}")))??;
    let committed = match &deployed.commit {
        Some(commit) => format!(
            "committed {} ({} files)",
            repository::short(commit),
            deployed.files.len()
        ),
        None => "nothing new to commit".to_string(),
    };
    eprintln!(
        "{}/{}: {committed}; pushed {} to branch {} of {}",
        app.team,
        app.name,
        repository::short(&deployed.head),
        deployed.branch,
        deployed.url
    );
    let waited = if args.no_wait {
        "not waited for (--no-wait)"
    } else if !config.gitops.argocd.enabled {
        "not waited for: Argo CD is off (`gitops.argocd.enabled: false`)"
    } else {
        let cluster = comind::gitops::access::connect_env(&env).await?;
        let (ctx, printer) = progress_on_stderr(&env, "app/deploy");
        let settings = &config.gitops.argocd;
        let result = applications::converge(
            &cluster.client,
            &ctx,
            platform::argocd::NAMESPACE,
            std::slice::from_ref(&app.application),
            applications::Limits {
                timeout: settings.sync_timeout.get(),
                degraded_grace: settings.degraded_grace.get(),
            },
        )
        .await;
        printer.abort();
        result?;
        "synced and healthy"
    };
    if cli.output == OutputMode::Json {
        let line = serde_json::json!({
            "team": app.team, "app": app.name, "application": app.application,
            "commit": deployed.commit, "head": deployed.head, "files": deployed.files,
            "branch": deployed.branch, "url": deployed.url, "argocd": waited,
        });
        stdout_line(&line.to_string());
    } else {
        print_human(
            cli.output,
            &format!(
                "{} (Argo CD Application {}): {waited}\n",
                app.name, app.application
            ),
        );
    }
    Ok(0)
}

/// What `app new` did about the team's place in `platform.teams`, for the user.
fn team_in_config(config: &Config, team: &str, dry_run: bool) -> Result<Option<String>, Error> {
    use comind::gitops::scaffold::TeamListing;
    Ok(
        match comind::gitops::scaffold::list_team(config, team, dry_run)? {
            TeamListing::Listed => None,
            TeamListing::WouldAdd(file) => Some(format!(
                "would add team `{team}` to platform.teams in {}\n",
                file.display()
            )),
            TeamListing::Added(file) => Some(format!(
                "added team `{team}` to platform.teams in {}: the next `comind up` makes its namespace\n",
                file.display()
            )),
            TeamListing::ByHand(what) => Some(format!("{what}\n")),
        },
    )
}

fn app_new(cli: &Cli, args: &AppNewArgs) -> Result<u8, Error> {
    let config = load_config(cli)?;
    let uses = args
        .uses
        .iter()
        .map(|id| {
            comind_core::ServiceKind::from_id(id).ok_or_else(|| {
                Error::invalid_input(format!("`{id}` is not a platform service"))
                    .with_hint("use postgres, object-store, cache or queue")
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let environments = if args.environments.is_empty() {
        vec![config.environment.to_string()]
    } else {
        args.environments.clone()
    };
    let env = comind_core::Environment::new(config)?;
    let image = args
        .image
        .clone()
        .unwrap_or_else(|| comind::gitops::scaffold::default_image(&env, &args.team, &args.name));
    let spec = comind::gitops::scaffold::AppSpec {
        name: args.name.clone(),
        team: args.team.clone(),
        image,
        port: args.port,
        environments,
        uses,
    };
    let done =
        comind::gitops::scaffold::new_app(&env, &args.repo, &spec, args.force, args.dry_run)?;
    let shown = |paths: &[PathBuf]| -> Vec<String> {
        paths
            .iter()
            .map(|p| args.repo.join(p).display().to_string())
            .collect()
    };
    if cli.output == OutputMode::Json {
        let team = team_in_config(env.config(), &spec.team, args.dry_run)?;
        let line = serde_json::json!({
            "dry_run": args.dry_run,
            "team_config": team.map(|t| t.trim_end().to_string()),
            "written": shown(&done.written),
            "replaced": shown(&done.replaced),
            "unchanged": shown(&done.unchanged),
            "kept": shown(&done.kept),
        });
        stdout_line(&line.to_string());
        return Ok(0);
    }
    let (write, replace) = if args.dry_run {
        ("would write", "would replace")
    } else {
        ("wrote", "replaced")
    };
    let mut text = String::new();
    for path in shown(&done.written) {
        text.push_str(&format!("{write} {path}\n"));
    }
    for path in shown(&done.replaced) {
        text.push_str(&format!("{replace} {path}\n"));
    }
    for path in shown(&done.kept) {
        text.push_str(&format!(
            "kept {path}: it differs from what Comind writes (your edit stays; --force replaces it)\n"
        ));
    }
    if done.written.is_empty() && done.replaced.is_empty() {
        text.push_str("the application's chart was there already: nothing written\n");
    } else if !args.dry_run {
        text.push_str(&format!(
            "next: `comind app deploy {}`; Argo CD deploys it as `{}-{}` into namespace `{}`\n",
            spec.name, spec.team, spec.name, spec.team
        ));
    }
    if let Some(line) = team_in_config(env.config(), &spec.team, args.dry_run)? {
        text.push_str(&line);
    }
    print_human(cli.output, &text);
    Ok(0)
}

/// A context for a wait outside the engine (`app deploy`, `backup run`), named
/// `id`, whose progress messages a task prints on stderr until it is aborted.
fn progress_on_stderr(
    env: &std::sync::Arc<comind_core::Environment>,
    id: &str,
) -> (comind_core::PhaseContext, tokio::task::JoinHandle<()>) {
    let ctx = comind_core::PhaseContext::standalone(
        PhaseId::new(id),
        comind_core::Operation::Apply,
        env.clone(),
        std::collections::HashMap::new(),
    );
    let mut events = ctx.events().subscribe();
    let printer = tokio::spawn(async move {
        while let Some(record) = events.recv().await {
            if let comind_core::event::Event::PhaseProgress { message, .. } = &record.event {
                eprintln!("{message}");
            }
        }
    });
    (ctx, printer)
}

async fn backup_run(cli: &Cli, args: &BackupRunArgs) -> Result<u8, Error> {
    use comind::gitops::platform::backups::run::{self, BackupKind};
    let env = std::sync::Arc::new(comind_core::Environment::new(load_config(cli)?)?);
    let kinds = match args.kind {
        Some(BackupKindArg::Postgres) => vec![BackupKind::Postgres],
        Some(BackupKindArg::Objects) => vec![BackupKind::Objects],
        None => BackupKind::ALL.to_vec(),
    };
    let cluster = comind::gitops::access::connect_env(&env).await?;
    let client = &cluster.client;
    // Every backup is checked before any Job is made: one that cannot start (no
    // CronJob, or a run going on) stops the command before anything is started.
    for kind in &kinds {
        run::check(client, &env, *kind).await?;
    }
    let mut started = Vec::new();
    for kind in kinds {
        let job = run::start(client, &env, kind).await?;
        eprintln!("{kind} backup: started Job {}/{}", job.namespace, job.name);
        if !job.counted {
            eprintln!(
                "warning: CronJob {} does not count Job {} as running (its status could not \
                 be written), so a scheduled run may start beside it",
                kind.cron_job(),
                job.name
            );
        }
        started.push(job);
    }
    let mut results = Vec::new();
    if args.no_wait {
        results.extend(started.iter().map(|job| (job, "started", None)));
    } else {
        let (ctx, printer) = progress_on_stderr(&env, "backup/run");
        let waits = started
            .iter()
            .map(|job| run::wait(client, &ctx, job, args.timeout));
        let ended = futures_util::future::join_all(waits).await;
        printer.abort();
        let mut first_error = None;
        for (job, outcome) in started.iter().zip(ended) {
            match outcome {
                Ok(done) => results.push((job, "complete", done.duration)),
                Err(err) => {
                    let outcome = match err.kind() {
                        ErrorKind::Timeout => "timed_out",
                        ErrorKind::Cancelled => "cancelled",
                        _ => "failed",
                    };
                    results.push((job, outcome, None));
                    // The first failure is the command's error; any other is said here.
                    if first_error.is_none() {
                        first_error = Some(err);
                    } else {
                        eprintln!("{} backup: {err}", job.kind);
                    }
                }
            }
        }
        if let Some(err) = first_error {
            print_backup_results(cli, &results);
            return Err(err);
        }
    }
    print_backup_results(cli, &results);
    Ok(0)
}

/// What `backup run` prints on stdout: one line per Job, or the JSON line.
fn print_backup_results(
    cli: &Cli,
    results: &[(
        &comind::gitops::platform::backups::run::StartedJob,
        &str,
        Option<std::time::Duration>,
    )],
) {
    if cli.output == OutputMode::Json {
        stdout_line(&backup_results(results).to_string());
        return;
    }
    let mut text = String::new();
    for (job, outcome, duration) in results {
        let took = duration
            .map(|d| format!(" in {}", humantime::format_duration(d)))
            .unwrap_or_default();
        text.push_str(&format!(
            "{} backup: Job {}/{} {}{took}\n",
            job.kind,
            job.namespace,
            job.name,
            outcome.replace('_', " ")
        ));
    }
    print_human(cli.output, &text);
}

/// The JSON line of `backup run`.
fn backup_results(
    results: &[(
        &comind::gitops::platform::backups::run::StartedJob,
        &str,
        Option<std::time::Duration>,
    )],
) -> serde_json::Value {
    let jobs: Vec<_> = results
        .iter()
        .map(|(job, outcome, duration)| {
            serde_json::json!({
                "kind": job.kind.as_str(), "namespace": job.namespace, "job": job.name,
                "outcome": outcome, "duration_ms": duration.map(|d| d.as_millis() as u64),
            })
        })
        .collect();
    serde_json::json!({ "backups": jobs })
}

async fn backup_list(cli: &Cli, args: &BackupListArgs) -> Result<u8, Error> {
    let bootstrap = bootstrap(cli, None, None)?;
    let listing = comind::backups::list(&bootstrap).await?;
    let postgres = args.kind != Some(BackupKindArg::Objects);
    let objects = args.kind != Some(BackupKindArg::Postgres);
    if cli.output == OutputMode::Json {
        let mut line = serde_json::json!({ "bucket": listing.bucket });
        if postgres {
            line["postgres"] = serde_json::json!(listing.postgres);
        }
        if objects {
            line["objects"] = serde_json::json!(listing.objects);
        }
        stdout_line(&line.to_string());
        return Ok(0);
    }
    let mut text = String::new();
    if postgres {
        text.push_str(&format!(
            "PostgreSQL backups in s3://{}/{} (newest first):\n",
            listing.bucket, listing.postgres_prefix
        ));
        if listing.postgres.is_empty() {
            text.push_str("  none yet: `comind backup run postgres` takes one now\n");
        }
        for backup in &listing.postgres {
            text.push_str(&format!(
                "  {:<20}  {:>9}  {:<10}  {}\n",
                backup.taken.as_deref().unwrap_or("-"),
                bytes_text(backup.bytes),
                if backup.complete {
                    "complete"
                } else {
                    "incomplete"
                },
                backup.key
            ));
        }
    }
    if objects {
        text.push_str(&format!(
            "Bucket mirrors in s3://{}/objects/:\n",
            listing.bucket
        ));
        if listing.objects.is_empty() {
            text.push_str("  none: no bucket but the backup bucket is configured\n");
        }
        for mirror in &listing.objects {
            text.push_str(&format!(
                "  {:<30}  {:>7} objects  {:>9}  newest {}\n",
                mirror.bucket,
                mirror.objects,
                bytes_text(mirror.bytes),
                mirror.newest.as_deref().unwrap_or("-")
            ));
        }
    }
    print_human(cli.output, &text);
    Ok(0)
}

/// A size for people: `812 B`, `12.3 KiB`, `1.5 GiB`.
fn bytes_text(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

async fn restore_postgres(cli: &Cli, args: &RestorePostgresArgs) -> Result<u8, Error> {
    use comind::gitops::platform::backups::restore;
    let bootstrap = bootstrap(cli, None, None)?;
    let env = bootstrap.env().clone();
    if !env.config().services.postgres.enabled {
        return Err(Error::invalid_input(format!(
            "environment `{}` has no PostgreSQL to restore",
            env.name()
        )));
    }
    // Everything is checked before anything is made: the confirmation's form, the
    // backup, the administrator's credentials, that no backup or restore runs.
    if let Some(confirm) = &args.confirm
        && confirm != env.name()
    {
        return Err(Error::invalid_input(format!(
            "--confirm {confirm} does not name this environment (`{}`); nothing was restored",
            env.name()
        ))
        .with_hint(format!("pass --confirm {}", env.name())));
    }
    if let Some(key) = &args.from {
        // Its whole object key, as some tools print it, names the same backup.
        let prefix = format!("postgres/{}/", env.name());
        restore::check_key(key.strip_prefix(&prefix).unwrap_or(key))?;
    }
    if args.confirm.is_none() {
        can_confirm(&env)?;
    }
    let listing = comind::backups::list(&bootstrap).await?;
    let backup = listing.choose(args.from.as_deref())?;
    let credentials = comind::backups::restore_credentials(&env)?;
    let cluster = comind::gitops::access::connect_env(&env).await?;
    let client = &cluster.client;
    restore::check(client, &env).await?;
    if args.confirm.is_none() {
        confirm_restore(&env, &backup.key, backup.taken.as_deref())?;
    }
    let started = restore::start(client, &env, &credentials, &backup.key).await?;
    eprintln!(
        "postgres restore: started Job {}/{} to restore {}",
        started.namespace, started.name, started.key
    );
    let (ctx, printer) = progress_on_stderr(&env, "restore/postgres");
    let waited = restore::wait(client, &ctx, &started, args.timeout).await;
    printer.abort();
    // The administrator's Secret goes once the Job has ended; a Job left running
    // (timeout, Ctrl-C) still needs it, and the wait's error says so.
    match restore::finish(client, &started).await {
        Ok(_) => {}
        Err(err) => eprintln!("warning: {err}"),
    }
    let (outcome, duration) = match &waited {
        Ok(duration) => ("complete", *duration),
        Err(err) => (
            match err.kind() {
                ErrorKind::Timeout => "timed_out",
                ErrorKind::Cancelled => "cancelled",
                _ => "failed",
            },
            None,
        ),
    };
    if cli.output == OutputMode::Json {
        stdout_line(
            &serde_json::json!({ "restore": {
                "kind": "postgres", "key": started.key, "namespace": started.namespace,
                "job": started.name, "outcome": outcome,
                "duration_ms": duration.map(|d| d.as_millis() as u64),
            }})
            .to_string(),
        );
    } else {
        let took = duration
            .map(|d| format!(" in {}", humantime::format_duration(d)))
            .unwrap_or_default();
        print_human(
            cli.output,
            &format!(
                "postgres restore of {}: Job {}/{} {}{took}\n",
                started.key,
                started.namespace,
                started.name,
                outcome.replace('_', " ")
            ),
        );
    }
    waited.map(|_| 0)
}

/// Whether the user can confirm a restore on the terminal: not in production, and
/// only with a terminal; otherwise `--confirm ENV` is needed.
fn can_confirm(env: &comind_core::Environment) -> Result<(), Error> {
    use std::io::IsTerminal;
    let needs_flag = |why: &str| {
        Error::invalid_input(format!(
            "a restore replaces the databases of `{}`; {why}, so it needs --confirm {}; \
             nothing was restored",
            env.name(),
            env.name()
        ))
        .with_hint(format!("pass --confirm {} if you mean it", env.name()))
    };
    if env.is_production() {
        return Err(needs_flag("the environment is production"));
    }
    if !std::io::stdin().is_terminal() {
        return Err(needs_flag("there is no terminal to ask on"));
    }
    Ok(())
}

/// Asks on the terminal before a restore replaces the databases: the user types the
/// environment's name (after [`can_confirm`]).
fn confirm_restore(
    env: &comind_core::Environment,
    key: &str,
    taken: Option<&str>,
) -> Result<(), Error> {
    use std::io::BufRead;
    eprint!(
        "This replaces every database of PostgreSQL in `{}` with the backup {key}{}.\n\
         Type the environment's name to go on: ",
        env.name(),
        taken.map(|t| format!(" (taken {t})")).unwrap_or_default()
    );
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::invalid_input(format!("cannot read the answer: {e}")))?;
    if answer.trim() != env.name() {
        return Err(Error::invalid_input(format!(
            "the answer was not `{}`; nothing was restored",
            env.name()
        )));
    }
    Ok(())
}

async fn seal(cli: &Cli, args: &SealArgs) -> Result<u8, Error> {
    use comind::gitops::sealing::{self, PlainSecret, Scope, SealingCertificate};
    use std::io::{IsTerminal, Read};

    let scope = match args.scope {
        ScopeArg::Strict => Scope::Strict,
        ScopeArg::NamespaceWide => Scope::NamespaceWide,
        ScopeArg::ClusterWide => Scope::ClusterWide,
    };
    // The Secret first: bad input fails before any file or cluster is read.
    let mut secret = if args.from_literal.is_empty() && args.from_file.is_empty() {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            return Err(Error::invalid_input("no values to seal").with_hint(
                "give --from-literal KEY=VALUE or --from-file KEY=PATH, or pipe a Secret manifest",
            ));
        }
        let mut text = String::new();
        stdin
            .lock()
            .read_to_string(&mut text)
            .map_err(|e| Error::invalid_input(format!("cannot read standard input: {e}")))?;
        PlainSecret::from_manifest(&text, args.name.as_deref(), args.namespace.as_deref())?
    } else {
        let (Some(name), Some(namespace)) = (&args.name, &args.namespace) else {
            return Err(Error::invalid_input(
                "--name and --namespace are needed with --from-literal and --from-file",
            ));
        };
        let mut secret = PlainSecret::new(name, namespace)?;
        for literal in &args.from_literal {
            secret.insert_literal(literal)?;
        }
        for item in &args.from_file {
            secret.insert_file(item)?;
        }
        secret
    };
    if let Some(secret_type) = &args.secret_type {
        secret.set_type(secret_type);
    }
    let (certificate, origin) = match &args.cert {
        Some(path) => (
            SealingCertificate::from_file(path)?,
            path.display().to_string(),
        ),
        None => {
            let env = std::sync::Arc::new(comind_core::Environment::new(load_config(cli)?)?);
            let store = comind::secret_store(&env)?;
            let (cert, origin) = sealing::environment_certificate(&env, store.as_ref()).await?;
            (cert, origin.to_string())
        }
    };
    let sealed = sealing::seal(&certificate, &secret, scope)?;
    // stdout is the manifest alone (for a redirect into the repository); what it was
    // sealed with goes to stderr.
    if cli.output == OutputMode::Json {
        stdout_line(&sealed.to_json()?.to_string());
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(sealed.to_yaml()?.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| Error::internal(format!("cannot write to standard output: {e}")))?;
        eprintln!(
            "sealed {}/{} ({} scope, keys: {}) with the certificate of {origin}",
            secret.namespace(),
            secret.name(),
            scope,
            secret.keys().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(0)
}

fn gitops_init(cli: &Cli, args: &GitopsInitArgs) -> Result<u8, Error> {
    let config = load_config(cli)?;
    let done = comind::gitops::repository::init(
        &args.dir,
        &config.gitops.repo.path,
        config.environment.as_str(),
    )?;
    let shown = |paths: &[PathBuf]| -> Vec<String> {
        paths
            .iter()
            .map(|p| args.dir.join(p).display().to_string())
            .collect()
    };
    if cli.output == OutputMode::Json {
        let line = serde_json::json!({
            "written": shown(&done.written),
            "unchanged": shown(&done.unchanged),
            "kept": shown(&done.kept),
        });
        stdout_line(&line.to_string());
        return Ok(0);
    }
    let mut text = String::new();
    for path in shown(&done.written) {
        text.push_str(&format!("wrote {path}\n"));
    }
    for path in shown(&done.unchanged) {
        text.push_str(&format!("unchanged {path}\n"));
    }
    for path in shown(&done.kept) {
        text.push_str(&format!(
            "kept {path}: it differs from what Comind writes (your edit stays)\n"
        ));
    }
    text.push_str(if done.written.is_empty() {
        "the layout was there already: nothing written\n"
    } else {
        "next: commit it (`git init`, `git add -A`, `git commit`), then `comind gitops push`\n"
    });
    print_human(cli.output, &text);
    Ok(0)
}

/// The URL of the environment's local Git server (`GITOPS_REPO_URL`), once it is up.
#[cfg(feature = "local")]
async fn local_git_server_url(cli: &Cli, config: &Config) -> Result<String, Error> {
    use comind::core::cluster::{GIT_SERVER_PHASE_ID, GITOPS_REPO_URL};
    let repo = &config.gitops.repo;
    if !comind::local::git_server::runs_git_server(config) {
        let why = if !repo.is_local() {
            format!(
                "the GitOps repository is `{}`, not the local Git server: push to it with                  `git push`",
                repo.url
            )
        } else if config.profile != comind_core::Profile::Local {
            "the local Git server is the local profile's".to_string()
        } else {
            "Argo CD is off (`gitops.argocd.enabled: false`), and with it the local Git              server"
                .to_string()
        };
        return Err(Error::invalid_input(format!(
            "environment `{}` runs no local Git server: {why}",
            config.environment
        ))
        .with_hint("`comind gitops push` fills the local Git server of `gitops.repo.url: local`"));
    }
    let name = config.environment.to_string();
    let bootstrap = bootstrap(cli, None, None)?;
    let run = RunOptions {
        only: vec![PhaseId::new(GIT_SERVER_PHASE_ID)],
        ..RunOptions::default()
    };
    let (outputs, report) = bootstrap.outputs(&run).await?;
    let Some(url) = outputs.get(GITOPS_REPO_URL).map(|v| v.expose().to_string()) else {
        let why = report
            .summary
            .phases
            .iter()
            .find_map(|p| p.error.as_ref().map(|e| format!(": {e}")))
            .unwrap_or_default();
        return Err(Error::not_found(format!(
            "the local Git server of environment `{name}` is not up{why}"
        ))
        .with_resource(format!("container comind-{name}-{GIT_SERVER_PHASE_ID}"))
        .with_hint("run `comind up`, which starts it, then push again"));
    };
    Ok(url)
}

#[cfg(feature = "local")]
async fn gitops_push(cli: &Cli, args: &GitopsPushArgs) -> Result<u8, Error> {
    let config = load_config(cli)?;
    let branch = config.gitops.repo.revision.clone();
    let url = local_git_server_url(cli, &config).await?;
    let dir = args.dir.clone();
    let force = args.force;
    let pushed = tokio::task::spawn_blocking(move || {
        comind::gitops::repository::push(&dir, &url, &branch, force)
    })
    .await
    .map_err(|e| Error::internal(format!("the push was interrupted: {e}")))??;
    if !pushed.uncommitted.is_empty() {
        eprintln!(
            "warning: {} has {} uncommitted change(s); only committed work was pushed              (commit them and push again to include them)",
            pushed.work_tree.display(),
            pushed.uncommitted.len()
        );
    }
    if cli.output == OutputMode::Json {
        let line = serde_json::json!({
            "commit": pushed.commit,
            "branch": pushed.branch,
            "url": pushed.url,
            "outcome": pushed.outcome.describe(),
            "uncommitted": pushed.uncommitted.len(),
        });
        stdout_line(&line.to_string());
    } else {
        print_human(
            cli.output,
            &format!(
                "pushed {} ({}) to branch {} of {}: {}\n",
                comind::gitops::repository::short(&pushed.commit),
                pushed.subject,
                pushed.branch,
                pushed.url,
                pushed.outcome.describe()
            ),
        );
    }
    Ok(0)
}

#[cfg(not(feature = "local"))]
async fn gitops_push(_cli: &Cli, _args: &GitopsPushArgs) -> Result<u8, Error> {
    // Says the local profile is not in this build, and how to get it.
    comind::providers(comind_core::Profile::Local).map(|_| 0)
}

async fn doctor(cli: &Cli) -> Result<u8, Error> {
    let bootstrap = bootstrap(cli, None, None)?;
    let checks = bootstrap.doctor().await;
    let passed = Bootstrap::doctor_passed(&checks);
    if cli.output == OutputMode::Json {
        let line = serde_json::json!({ "checks": checks, "passed": passed });
        stdout_line(&line.to_string());
    } else {
        let rows: Vec<Vec<String>> = checks
            .iter()
            .map(|c| {
                let mark = match c.status {
                    CheckStatus::Ok => "ok",
                    CheckStatus::Warning => "warning",
                    CheckStatus::Failed => "FAILED",
                };
                vec![c.check.clone(), mark.to_string(), c.detail.clone()]
            })
            .collect();
        let mut text = report::table(&["CHECK", "STATUS", "DETAIL"], &rows);
        for check in checks.iter().filter(|c| c.fix.is_some()) {
            if let Some(fix) = &check.fix {
                text.push_str(&format!("\n{}: {fix}", check.check));
            }
        }
        text.push('\n');
        print_human(cli.output, &text);
    }
    Ok(if passed { 0 } else { FAILED })
}

fn init(cli: &Cli, args: &InitArgs) -> Result<u8, Error> {
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(comind_core::config::DEFAULT_FILE_NAME));
    if path.exists() && !args.force {
        return Err(Error::invalid_input(format!(
            "{} already exists; nothing was written",
            path.display()
        ))
        .with_hint("pass --force to overwrite it"));
    }
    let mut text = INIT_TEMPLATE.to_string();
    if let Some(env) = &cli.environment {
        text = text.replacen(
            "\nenvironment: dev\n",
            &format!("\nenvironment: {env}\n"),
            1,
        );
    }
    if let Some(profile) = cli.profile {
        text = text.replacen(
            "\nprofile: local\n",
            &format!("\nprofile: {}\n", profile.as_str()),
            1,
        );
    }
    // What we write must load: check before touching the file.
    Config::from_yaml_str(&text, &path)?;
    std::fs::write(&path, text).map_err(|e| {
        Error::permission(format!("cannot write {}", path.display()))
            .with_source(e)
            .with_hint("choose another path with --config")
    })?;
    if cli.output == OutputMode::Json {
        stdout_line(&serde_json::json!({ "written": path.display().to_string() }).to_string());
    } else {
        stdout_line(&format!(
            "wrote {}: every field shows its default. Next: `comind doctor`, then `comind up`.",
            path.display()
        ));
    }
    Ok(0)
}

fn completions(args: &CompletionsArgs) -> Result<u8, Error> {
    let mut command = Cli::command();
    // Generate into memory: clap_complete panics on a closed pipe (`| head`).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "comind", &mut script);
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&script);
    Ok(0)
}

#[cfg(feature = "aws")]
async fn eks_token(args: &EksTokenArgs) -> Result<u8, Error> {
    let json = comind_aws::exec_credential_for(
        &args.cluster,
        Some(&args.region),
        args.endpoint_url.as_deref(),
    )
    .await?;
    stdout_line(&json);
    Ok(0)
}

#[cfg(not(feature = "aws"))]
async fn eks_token(_args: &EksTokenArgs) -> Result<u8, Error> {
    // Says the aws profile is not in this build, and how to get it.
    comind::providers(comind_core::Profile::Aws).map(|_| 0)
}
