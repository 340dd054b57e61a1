from django.db import models


class Order(models.Model):
    amount_cents = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    # The timer that expires the order if it is still unpaid then (`timers` names it by UUID).
    expiry_timer = models.UUIDField(null=True)
