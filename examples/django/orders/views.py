from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from orders.checkout import place_order


@csrf_exempt
@require_POST
def create_order(request: HttpRequest) -> JsonResponse:
    """`POST /orders` with `amount_cents`: the order, and its expiry timer, in one transaction."""
    order = place_order(int(request.POST["amount_cents"]))
    return JsonResponse({"id": order.pk, "expiry_timer": str(order.expiry_timer)}, status=201)
