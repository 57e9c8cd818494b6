/* task_policy: the tasks example's own plug-in, on the C PDK generated from the
 * tasks app's document (`hostwire openapi --app tasks.app:create_app`).
 *
 * - task_before_save (runs inside the write): refuses a task whose title holds
 *   the config key "forbidden" (default "skip the tests"), and trims spaces
 *   around a title (the record is replaced, and written trimmed).
 * - task_after_create (delivered from the outbox after the commit): a new task
 *   of priority 1 gets a follow-up task "Review: <title>" of priority 2,
 *   created through the app's own createTask operation (grant createTask).
 */
#include "hostwire.h"

static bool contains(hw_str text, hw_str part) {
    if (part.len == 0 || part.len > text.len) return false;
    for (size_t at = 0; at + part.len <= text.len; at++) {
        size_t i = 0;
        while (i < part.len && text.ptr[at + i] == part.ptr[i]) i++;
        if (i == part.len) return true;
    }
    return false;
}

static bool starts_with(hw_str text, hw_str prefix) {
    if (prefix.len > text.len) return false;
    for (size_t i = 0; i < prefix.len; i++) {
        if (text.ptr[i] != prefix.ptr[i]) return false;
    }
    return true;
}

static hw_str trimmed(hw_str text) {
    size_t start = 0, end = text.len;
    while (start < end && text.ptr[start] == ' ') start++;
    while (end > start && text.ptr[end - 1] == ' ') end--;
    return hw_str_copy(text.ptr + start, end - start);
}

static int guard(const TaskBeforeEvent *event, TaskBeforeEventResult *result) {
    const TaskDraft *task = event->data->record;
    hw_str forbidden = hw_config("forbidden");
    if (forbidden.ptr == NULL) forbidden = HW_STR("skip the tests");
    if (contains(task->title, forbidden)) {
        result->reject = hw_new(TaskBeforeEventResultReject);
        result->reject->reason = hw_format("a task may not say \"%S\"", forbidden);
        return 0;
    }
    hw_str title = trimmed(task->title);
    if (title.len != task->title.len) {
        TaskDraft *clean = hw_new(TaskDraft);
        *clean = *task;
        clean->title = title;
        result->record = clean;
    }
    return 0;
}
HW_ON_TASK_BEFORE_SAVE(guard)

static int follow_up(const TaskEvent *event) {
    const TaskOut *task = event->data->record;
    if (task->priority != 1 || starts_with(task->title, HW_STR("Review: "))) return 0;
    TaskIn review = {0};
    review.title = hw_format("Review: %S", task->title);
    review.priority = 2;
    review.has_priority = true;
    api_create_task_response created = api_create_task(&review);
    if (!created.ok) {
        return hw_fail("create_task: %S (%S)", created.error.message, created.error.code);
    }
    hw_log_info("task %lld: review task %lld", (long long)task->id, (long long)created.body->id);
    return 0;
}
HW_ON_TASK_AFTER_CREATE(follow_up)
