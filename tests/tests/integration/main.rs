//! tracker's integration tests, in one binary so tracker-user is linked once (the layout of
//! aya's `test/integration-test`): one module per area, a shared harness with RAII guards.
//!
//! - [`kernel`]: the real programs under BPF_PROG_TEST_RUN, on crafted packets and captures;
//! - [`lab`]: the namespace lab itself (tunnel, resolvers, servers, teardown);
//! - [`e2e`]: the real daemon and CLI on the lab's wireguard-go `wg0`: counting and blocking;
//! - [`bypass`]: `block-dns-bypass` against encrypted DNS through the lab's tunnel;
//! - [`names`]: naming flows from real resolvers, TLS and HTTP clients;
//! - [`careless`]: careless and hostile use (issue 8);
//! - [`page`]: the report's HTML page in headless Chromium;
//! - [`dashboard`]: the daemon's dashboard, fetched from a phone through the tunnel;
//! - [`dashboard_changes`]: its block and unblock buttons, login, CSRF and experiments, in a
//!   browser on the phone;
//! - [`dashboard_pages`]: its detail pages, query log, connections and live updates, in a
//!   browser driven over [`webdriver`];
//! - [`dashboard_live`]: its one-time login link, countdowns, live totals and rows, in a browser;
//! - [`package`]: the Debian package and the source install, and an upgrade under a running daemon;
//! - [`apt_install`]: the package installed, removed and purged by apt in a fresh Debian root;
//! - [`privilege`]: the daemon as its systemd unit runs it: its user, capabilities and filters;
//! - [`wg_access`]: the daemon under its unit reading wireguard-go's peers from the package's
//!   root reader, and again after wireguard-go restarts;
//! - [`report`]: who the devices talked to: companies, services, protocols, devices (issue 10);
//! - [`common`]: the harness: the daemon and CLI as tests drive them, scratch dirs, guards.
//!
//! One failure style. Every test returns `anyhow::Result<()>`: a step that fails to happen
//! (a lab that does not come up, a command that cannot run, a timeout) is an `Err` with context
//! saying which step; a wrong value is an `assert!`/`assert_eq!` (or a [`common::Checks`] entry
//! when one test lists several bugs) whose message shows the expected and the measured value.
//! Tests that need root print `skipped: needs root` without it and fail under `CI=true`
//! ([`tracker_tests::root_or_skip`]); lab tests take the harness's serial lock, so they run one
//! at a time whatever `--test-threads` says. Run one area with
//! `cargo xtask test -- --test integration names::`.

mod apt_install;
mod blocking;
mod bypass;
mod careless;
mod common;
mod config;
mod dashboard;
mod dashboard_changes;
mod dashboard_live;
mod dashboard_pages;
mod differential;
mod e2e;
mod experiment;
mod import;
mod kernel;
mod lab;
mod names;
mod package;
mod page;
mod privilege;
mod prune;
mod report;
mod survive;
mod webdriver;
mod wg_access;
