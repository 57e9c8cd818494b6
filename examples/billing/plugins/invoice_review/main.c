/* invoice_review: a plug-in for the billing stand-in, through `hostwire gateway`.
 *
 * The billing app (any language; here examples/billing/standin.py) sends its
 * invoice.created webhook to the gateway; the gateway checks it and delivers
 * it to this plug-in's invoice_created export, from its outbox. The plug-in
 * tags the invoice through the app's own updateInvoice operation (grant
 * updateInvoice): metadata "review" is "required" for totals of at least the
 * config key threshold_cents (default 10000), else "auto-approved".
 */
#include "hostwire.h"

static int review(const InvoiceObjectExtended *invoice) {
    int64_t threshold = hw_config_int("threshold_cents", 10000);
    bool big = invoice->total_amount_cents >= threshold;

    InvoiceUpdateInputInvoiceMetadataItem tag = {0};
    tag.key = HW_STR("review");
    tag.value = big ? hw_format("required: %lld cents", (long long)invoice->total_amount_cents)
                    : HW_STR("auto-approved");
    InvoiceUpdateInputInvoice change = {0};
    change.metadata.items = &tag;
    change.metadata.count = 1;
    InvoiceUpdateInput body = {.invoice = &change};

    api_update_invoice_response updated = api_update_invoice(invoice->lago_id, &body);
    if (!updated.ok) {
        return hw_fail("update_invoice: %S (%S)", updated.error.message, updated.error.code);
    }
    hw_log_info("invoice %S: review %S", invoice->number, tag.value);
    return 0;
}

static int on_invoice_created(const InvoiceCreatedEvent *event) {
    return review(event->invoice);
}
HW_ON_INVOICE_CREATED(on_invoice_created)
