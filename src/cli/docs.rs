//! Shell completions and manual pages, generated from the clap definitions
//! themselves, so they always match what the parser accepts.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Roff};
use clap_mangen::Man;

use super::{fail, Cli};

#[derive(Args, Debug)]
pub(super) struct CompletionsArgs {
    /// The shell to write the completion script for.
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Args, Debug)]
pub(super) struct ManArgs {
    /// Write gatehouse.1 and one page per subcommand (gatehouse-serve.1,
    /// gatehouse-keys-create.1, ...) into DIR instead of printing gatehouse(1).
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

/// `gatehouse completions SHELL`: the script on stdout.
pub(super) fn completions(args: CompletionsArgs) -> ExitCode {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "gatehouse", &mut out);
    write_stdout(&out)
}

/// `gatehouse man`: gatehouse(1) on stdout, or every page into a directory.
pub(super) fn man(args: ManArgs) -> ExitCode {
    match args.out_dir {
        None => {
            let mut out = Vec::new();
            if let Err(e) = render_main_page(&mut out) {
                return fail(format!("cannot render the manual page: {e}"));
            }
            write_stdout(&out)
        }
        Some(dir) => match write_pages(&dir) {
            Ok(count) => {
                println!("Wrote {count} manual pages to {}.", dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(format!(
                "cannot write manual pages to {}: {e}",
                dir.display()
            )),
        },
    }
}

fn write_stdout(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`gatehouse man | head`) is not worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// The command line as the pages describe it: no `help` subcommand (its
/// page is never written, so gatehouse(1) must not name it).
fn documented_command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// gatehouse(1): the command's page, then the environment, files and exit status.
fn render_main_page(out: &mut dyn Write) -> std::io::Result<()> {
    render_page(documented_command(), out)?;
    extra_sections().to_writer(out)
}

/// gatehouse.1 with the extra sections, plus a page for every subcommand.
fn write_pages(dir: &std::path::Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let mut main = std::fs::File::create(dir.join("gatehouse.1"))?;
    render_main_page(&mut main)?;
    main.flush()?;
    let cmd = documented_command();
    let mut count = 1;
    let mut stack: Vec<clap::Command> = cmd.get_subcommands().cloned().collect();
    while let Some(sub) = stack.pop() {
        stack.extend(sub.get_subcommands().cloned());
        let file = Man::new(sub.clone()).get_filename();
        let mut page = std::fs::File::create(dir.join(file))?;
        render_page(sub, &mut page)?;
        page.flush()?;
        count += 1;
    }
    Ok(count)
}

/// clap_mangen's page for `cmd`, with [`synopsis`] in place of its own.
fn render_page(cmd: clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    let man = Man::new(cmd.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    synopsis(&cmd).to_writer(out)?;
    man.render_description_section(out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(out)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(out)?;
    }
    if cmd.get_after_long_help().is_some() || cmd.get_after_help().is_some() {
        man.render_extra_section(out)?;
    }
    if cmd.get_version().is_some() {
        man.render_version_section(out)?;
    }
    Ok(())
}

/// The SYNOPSIS section with what each option takes (`[--config FILE]`),
/// which clap_mangen leaves out, and the subcommand as COMMAND.
fn synopsis(cmd: &clap::Command) -> Roff {
    let mut line = vec![bold(cmd.get_bin_name().unwrap_or_else(|| cmd.get_name()))];
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        let (open, close) = if arg.is_required_set() {
            ("", "")
        } else {
            ("[", "]")
        };
        let value = || -> String {
            match arg.get_value_names() {
                Some(names) => names
                    .iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                None => arg.get_id().as_str().to_uppercase().replace('-', "_"),
            }
        };
        line.push(roman(format!(" {open}")));
        if arg.is_positional() {
            line.push(italic(value()));
        } else {
            match (arg.get_short(), arg.get_long()) {
                (Some(short), Some(long)) => {
                    line.push(bold(format!("-{short}")));
                    line.push(roman("|"));
                    line.push(bold(format!("--{long}")));
                }
                (Some(short), None) => line.push(bold(format!("-{short}"))),
                (None, Some(long)) => line.push(bold(format!("--{long}"))),
                (None, None) => {}
            }
            if arg.get_num_args().is_some_and(|n| n.takes_values()) {
                line.push(roman(" "));
                line.push(italic(value()));
            }
        }
        line.push(roman(close));
    }
    if cmd.has_subcommands() {
        let (open, close) = if cmd.is_subcommand_required_set() {
            ("", "")
        } else {
            ("[", "]")
        };
        line.push(roman(format!(" {open}")));
        line.push(italic("COMMAND"));
        line.push(roman(close));
    }
    let mut roff = Roff::default();
    roff.control("SH", ["SYNOPSIS"]);
    roff.text(line);
    roff
}

fn extra_sections() -> Roff {
    let mut roff = Roff::default();
    roff.control("SH", ["ENVIRONMENT"]);
    for (name, text) in [
        (
            "GATEHOUSE_<KEY>",
            "Any setting, with __ for nesting: GATEHOUSE_SMTP__HOST, \
             GATEHOUSE_SECRETS__SESSION_KEY_FILE. Wins over the config file; \
             command-line flags win over it.",
        ),
        ("GATEHOUSE_CONFIG", "The configuration file, like --config."),
        ("RUST_LOG", "A log filter that overrides log.level."),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "Turn on OTLP trace export when telemetry.otlp_endpoint is not set. \
             OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, \
             OTEL_TRACES_SAMPLER_ARG, OTEL_EXPORTER_OTLP_HEADERS and \
             OTEL_EXPORTER_OTLP_TIMEOUT are honoured; OTEL_SDK_DISABLED=true \
             or OTEL_TRACES_EXPORTER=none turn export off.",
        ),
    ] {
        roff.control("TP", [])
            .text([bold(name)])
            .text([roman(text)]);
    }
    roff.control("SH", ["FILES"]);
    for (name, text) in [
        (
            "./gatehouse.toml",
            "Read when --config is not given and the file exists.",
        ),
        (
            "DATA_DIR/gatehouse.db",
            "The SQLite database (data_dir, default ./gatehouse-data).",
        ),
        (
            "DATA_DIR/local-secrets.toml",
            "Secrets generated in local mode (file mode 0600).",
        ),
        (
            "DATA_DIR/gatehouse.lock",
            "Locked by serve on SQLite for as long as it runs, and by copy-data and \
             migrate while they run: one of them at a time per data directory. The \
             lock goes with the process however it ends; leave the file in place.",
        ),
    ] {
        roff.control("TP", [])
            .text([bold(name)])
            .text([roman(text)]);
    }
    roff.control("SH", ["EXIT STATUS"]);
    roff.text([roman(
        "0 on success. 1 when a command fails, including when serve or \
         check-config refuse a configuration outside local mode (every problem \
         is printed with its setting's name). 2 for a command line clap cannot parse, \
         for serve, copy-data or migrate on a SQLite data directory another Gatehouse \
         process holds (the message names it), and for backup on PostgreSQL.",
    )]);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        roman("The configuration reference and the API's rules are in the "),
        italic("docs/"),
        roman(" folder of the source repository; a running server serves its API reference at "),
        italic("/docs"),
        roman(" and the OpenAPI document at "),
        italic("/api/v1/openapi.json"),
        roman("."),
    ]);
    roff
}
