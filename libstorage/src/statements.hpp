// Every SQL statement the store runs, named so it shows in logs and pg_stat_statements.
#pragma once

#include "pg_connection.hpp"

namespace keel::storage::detail::sql {

extern const statement begin;
extern const statement commit;
extern const statement enqueue_insert;
extern const statement enqueue_resolve;
extern const statement notify_runs;
extern const statement checkpoint_steps;
extern const statement checkpoint_steps_again;
extern const statement append_log;
extern const statement append_log_again;
extern const statement output_trim;
extern const statement output_append;
extern const statement output_append_again;
extern const statement output_read;
extern const statement finish_runs;
extern const statement release_runs;
extern const statement claim_runs;
extern const statement claim_parked;
extern const statement load_steps;
extern const statement heartbeat;
extern const statement get_run;
extern const statement cancel_run;
extern const statement continue_as_new;
extern const statement cancel_descendants;
extern const statement cancel_lock_tree;
extern const statement run_status_of;
extern const statement read_log;
extern const statement read_runs_log;
extern const statement open_hooks;
// The dashboard's reads (hook_inbox.cpp, run_counts.cpp, run_list.cpp): each served by an index, which
// tests/pg/dashboard_plans_test.cpp checks.
extern const statement list_hooks;
extern const statement list_hooks_of_workflow;
extern const statement count_at_rest;
extern const statement steps_log_boundary;
extern const statement count_steps_since;
extern const statement list_children;
extern const statement list_dead_lettered_runs;
extern const statement list_dead_lettered_runs_of_workflow;
extern const statement list_unclaimable_runs;
extern const statement list_unclaimable_runs_of_workflow;
extern const statement live_versions;
extern const statement follow_log;
extern const statement step_details;
extern const statement run_tree;
extern const statement runs_meta;
extern const statement trim_log;
extern const statement wait_lock;
extern const statement wait_decide;
extern const statement wait_any_decide;
extern const statement child_decide;
extern const statement start_child;
extern const statement send_event_lock;
extern const statement send_event;
extern const statement hook_secret;
extern const statement create_hook;
extern const statement resume_hook_lock;
extern const statement resume_hook;
extern const statement set_webhook_response;
extern const statement webhook_response;
extern const statement retry_run;
extern const statement retry_lock;
extern const statement rewind_lock;
extern const statement rewind_run;
extern const statement register_worker;
extern const statement unregister_worker;

// Cron schedules (schedules.cpp).
extern const statement put_schedule;
extern const statement get_schedule;
extern const statement list_schedules;
extern const statement pause_schedule;
extern const statement resume_schedule;
extern const statement delete_schedule;
extern const statement due_schedules;
extern const statement soonest_schedule;
extern const statement fire_schedule;
extern const statement schedule_last_run;

// Event triggers (event_triggers.cpp).
extern const statement declare_workflows;
extern const statement event_subscribers;

// Retention (retention.cpp).
extern const statement purge_runs;

// Concurrency keys (concurrency_keys.cpp).
extern const statement wake_key_parked;
extern const statement wake_throttled;

// Debounced enqueues (debounce.cpp).
extern const statement enqueue_debounced;

}  // namespace keel::storage::detail::sql
